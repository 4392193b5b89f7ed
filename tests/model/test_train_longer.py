"""Training a finished constant-LR run for longer (``--resume --epochs M``) equals an uninterrupted M-epoch run;
an earlier epoch's encoder can be exported from the checkpoints kept."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import built_once

from hemoembed.cli import main
from hemoembed.data.synthetic import make_synthetic_dataset
from hemoembed.errors import InputError
from hemoembed.model.pretrain import export_checkpoint
from hemoembed.model.pretrain_config import load_run_config

ARGS = ["--weights", "none", "--image-size", "32", "--batch-size", "8", "--val-fraction", "0.2", "--seed", "5",
        "--head", "mlp:16,8"]


def _pretrain(cells: Path, out: Path, *extra: str) -> None:
    result = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(out), *ARGS, *extra])
    assert result.exit_code == 0, result.output


def _weights(folder: Path, name: str = "encoder.keras") -> list[np.ndarray]:
    from hemoembed.model.encoder import load_encoder

    return [np.array(w) for w in load_encoder(folder / name)[0].weights]


@pytest.fixture(scope="module")
def constant_runs(tmp_path_factory) -> Path:
    """Shared by the three slow tests (the costly part): cells/, whole/ (2 constant epochs, ``ARGS`` with
    --keep-checkpoints 0, through the library so that its log lines, each with the checkpoint files it saw, are
    kept in whole.log.json) and one/ (the first of the 2 epochs, checkpoints kept); a test copies a run before
    changing it."""
    from hemoembed.data.manifest import load_manifest
    from hemoembed.model.pretrain import pretrain, resolve_config

    def build(root: Path) -> None:
        make_synthetic_dataset(root / "cells", n_per_class=4, sites=1, size=40, seed=2)
        whole, seen = root / "whole", []
        config = resolve_config(weights="none", image_size=32, batch_size=8, val_fraction=0.2, seed=5,
                                head="mlp:16,8", epochs=2, keep_checkpoints=0)  # ARGS --epochs 2 --keep-checkpoints 0
        pretrain(load_manifest(root / "cells"), whole, config,  # the folder, as the CLI reads it (not its CSV)
                 log=lambda line: seen.append((line, sorted(p.name for p in (whole / "checkpoints").glob("*")))))
        (root / "whole.log.json").write_text(json.dumps(seen))
        _pretrain(root / "cells", root / "one", "--epochs", "1", "--keep-checkpoints", "2")

    return built_once(tmp_path_factory, "constant-runs", build)  # trained once for all workers


@pytest.mark.slow
def test_a_constant_lr_run_trained_longer_equals_the_longer_run(tmp_path, constant_runs):
    cells = constant_runs / "cells"
    shutil.copytree(constant_runs / "whole", tmp_path / "whole")
    shutil.copytree(constant_runs / "one", tmp_path / "longer")
    _pretrain(cells, tmp_path / "longer", "--epochs", "2", "--resume")
    assert load_run_config(tmp_path / "longer").epochs == 2  # the saved config says what the run now is
    whole, longer = (tmp_path / n / "history.csv" for n in ("whole", "longer"))
    assert len(longer.read_text().splitlines()) == 3
    for a, b in zip(_weights(tmp_path / "whole"), _weights(tmp_path / "longer"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert whole.read_text().split("\n")[2].split(",")[1] == longer.read_text().split("\n")[2].split(",")[1]
    # an earlier epoch's encoder, from the checkpoints kept: epoch 2 is the run's encoder, epoch 1 is not
    export_checkpoint(tmp_path / "longer", 2, tmp_path / "e2.keras")
    export_checkpoint(tmp_path / "longer", 1, tmp_path / "e1.keras")
    for a, b in zip(_weights(tmp_path / "longer"), _weights(tmp_path, "e2.keras"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(tmp_path, "e1.keras"), _weights(tmp_path, "e2.keras")))
    with pytest.raises(InputError, match="no checkpoint of epoch 3 .kept: 1, 2"):
        export_checkpoint(tmp_path / "longer", 3, tmp_path / "e3.keras")
    # fewer epochs than already trained cannot be resumed: one line, exit 2, nothing changed
    before = (tmp_path / "longer" / "config.json").read_text()
    result = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "longer"), *ARGS,
                                       "--epochs", "1", "--resume"])
    assert result.exit_code == 2 and "already trained 2 epochs" in result.output, result.output
    assert (tmp_path / "longer" / "config.json").read_text() == before


@pytest.mark.slow
def test_a_constant_run_given_a_cooldown_on_resume_equals_the_run_planned_with_it(tmp_path, constant_runs):
    """Warmup-stable-decay: a constant-LR run resumed with ``--epochs M --cooldown F`` (its epochs all before the
    cool-down) ends where a run planned with them from the start ends; once the LR has begun to fall, a
    different length or cool-down is refused (one line, exit 2, nothing changed)."""
    cells = constant_runs / "cells"
    _pretrain(cells, tmp_path / "planned", "--epochs", "2", "--cooldown", "0.5")
    shutil.copytree(constant_runs / "one", tmp_path / "later")
    _pretrain(cells, tmp_path / "later", "--epochs", "2", "--cooldown", "0.5", "--resume")
    assert load_run_config(tmp_path / "later").cooldown == 0.5
    for a, b in zip(_weights(tmp_path / "planned"), _weights(tmp_path / "later"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the cool-down did change the weights: a constant 2-epoch run ends elsewhere
    assert any(not np.allclose(a, b, rtol=1e-5, atol=1e-6)
               for a, b in zip(_weights(tmp_path / "planned"), _weights(constant_runs / "whole"), strict=True))
    before = {p: p.read_bytes() for p in (tmp_path / "planned").rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "planned"), *ARGS,
                                       "--epochs", "3", "--cooldown", "0.5", "--resume"])
    assert result.exit_code == 2 and "cool-down starts after epoch 1" in result.output, result.output
    assert {p: p.read_bytes() for p in (tmp_path / "planned").rglob("*") if p.is_file()} == before


@pytest.mark.slow  # the fixture's whole/ run (next to the other two users: xdist hands out neighbours together)
def test_keep_checkpoints_0_keeps_the_last_while_training_and_drops_them_when_done(tmp_path, constant_runs):
    """The demo's setting: an interrupted run can resume (the last epoch's checkpoint exists while it trains),
    a finished one keeps only its encoder (no ~80 MB of weights and Adam slots) and refuses --resume."""
    cells, seen = constant_runs / "cells", json.loads((constant_runs / "whole.log.json").read_text())
    run = tmp_path / "run"
    shutil.copytree(constant_runs / "whole", run)
    # the log line of epoch N comes before N's checkpoint is written: epoch 2's line sees epoch 1's
    assert next(files for line, files in seen if line.startswith("epoch 2/2")) == ["checkpoint.json",
                                                                                    "epoch-0001.npz"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint.json"]
    assert any("checkpoints dropped" in line for line, _ in seen)
    assert (run / "encoder.keras").is_file() and len((run / "history.csv").read_text().splitlines()) == 3
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(run), "--resume", "--epochs", "3"])
    assert result.exit_code == 2 and "dropped its checkpoints" in result.output, result.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(InputError, match="kept: none"):
        export_checkpoint(run, 2, tmp_path / "e2.keras")


@pytest.mark.parametrize(("saved", "now", "trained", "refused"), [
    ((16, 0.0), (20, 0.2), 16, False),   # the constant part of the 20-epoch schedule is the 16 trained epochs
    ((16, 0.0), (20, 0.25), 16, True),   # the 20-epoch schedule's LR falls from epoch 15
    ((20, 0.2), (24, 0.2), 17, True),    # the new schedule falls from 19.2, but the saved one fell from 16...
    ((20, 0.2), (24, 0.2), 16, False),   # ...which is fine while only the 16 constant epochs are trained
    ((16, 0.0), (32, 0.0), 16, False),   # no cool-down at all: epochs may grow freely
])
def test_which_changes_of_length_and_cooldown_a_resume_accepts(saved, now, trained, refused):
    from hemoembed.model.pretrain_config import check_schedule_continues, resolve_config

    configs = [resolve_config(weights="none", epochs=e, cooldown=c) for e, c in (saved, now)]
    if refused:
        with pytest.raises(InputError, match=f"{trained} epochs are trained, but the learning rate's cool-down"):
            check_schedule_continues(*configs, trained, "run")
    else:
        check_schedule_continues(*configs, trained, "run")


@pytest.mark.parametrize(("options", "message"), [
    ({"cooldown": 1.5}, "--cooldown 1.5: must be a share of the run within"),
    ({"cooldown": 0.2, "lr_decay": "cosine"}, "--lr-decay cosine already decays it"),
])
def test_bad_cooldowns_are_refused_in_a_sentence(options, message):
    from hemoembed.model.pretrain_config import resolve_config

    with pytest.raises(InputError, match=message):
        resolve_config(weights="none", **options)


def test_a_cosine_run_cannot_be_trained_longer(tmp_path):
    """The refusal comes from the saved config alone, before any training: cheap."""
    from hemoembed.config import save_config
    from hemoembed.model.pretrain_config import resolve_config

    make_synthetic_dataset(tmp_path / "cells", n_per_class=1, sites=1, size=40, seed=2)
    run = tmp_path / "run"
    run.mkdir()
    save_config(resolve_config(weights="none", image_size=32, epochs=2, batch_size=8, lr_decay="cosine"),
                run / "config.json")
    result = CliRunner().invoke(main, ["pretrain", str(tmp_path / "cells"), "--out", str(run), "--weights", "none",
                                       "--image-size", "32", "--batch-size", "8", "--lr-decay", "cosine",
                                       "--epochs", "3", "--resume"])
    assert result.exit_code == 2 and "cannot resume with a different config" in result.output
    assert "epochs" in result.output


def test_a_run_that_dropped_its_checkpoints_is_refused_before_any_training(tmp_path):
    """The fast half of the above: the refusal reads only checkpoint.json, and leaves the run as it was."""
    from hemoembed.config import save_config
    from hemoembed.model.pretrain_config import resolve_config

    make_synthetic_dataset(tmp_path / "cells", n_per_class=1, sites=1, size=40, seed=2)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(resolve_config(weights="none", image_size=32, epochs=2, batch_size=8, keep_checkpoints=0),
                run / "config.json")
    (run / "checkpoints" / "checkpoint.json").write_text('{"epoch": 2, "file": null}\n')
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["pretrain", str(tmp_path / "cells"), "--out", str(run), "--resume"])
    assert result.exit_code == 2 and "dropped its checkpoints (--keep-checkpoints 0)" in result.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
