"""``hemoembed pretrain``: a real run on synthetic cells, kill + resume, two-device equivalence, bad input."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import built_once

from hemoembed.cli import main
from hemoembed.data.manifest import load_manifest
from hemoembed.data.preprocess import RECORD_VERSION, PreprocessingRecord
from hemoembed.data.synthetic import make_synthetic_dataset
from hemoembed.errors import InputError
from hemoembed.model.pretrain import PretrainConfig, pretrain, resolve_config
from hemoembed.model.pretrain_config import resume_ignores

ROOT = Path(__file__).parents[2]
# scratch preset, but a higher constant-start LR so that 12 steps visibly lower the loss
ARGS = ["--weights", "none", "--image-size", "32", "--epochs", "3", "--batch-size", "8", "--lr", "3e-3",
        "--warmup-epochs", "0", "--val-fraction", "0.2", "--seed", "3"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """40 synthetic cells plus one corrupt file that must be skipped and listed."""
    def build(root: Path) -> None:
        make_synthetic_dataset(root, n_per_class=8, sites=1, size=40, seed=1)
        (root / "neutrophil" / "broken.png").write_bytes(b"this is not an image")

    return built_once(tmp_path_factory, "pretrain-cells", build)  # the reference's cells, on every worker


def _config() -> PretrainConfig:
    """The library's spelling of ``ARGS``."""
    return resolve_config(weights="none", image_size=32, epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0.0,
                          val_fraction=0.2, seed=3)


@pytest.fixture(scope="module")
def reference(cells, tmp_path_factory) -> Path:
    """An uninterrupted run through the library, with the same settings as the CLI runs below (trained once
    for all workers; never changed)."""
    return built_once(tmp_path_factory, "pretrain-reference",
                      lambda out: pretrain(load_manifest(cells), out, _config(), log=lambda _: None))


@pytest.fixture
def started(tmp_path) -> Path:
    """A run folder as ``pretrain`` leaves it before its first epoch: its resolved config.json (what
    ``--resume`` compares against), without training for it."""
    from hemoembed.config import save_config

    save_config(resolve_config(_config()), tmp_path / "run" / "config.json")
    return tmp_path / "run"


def _history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv") as handle:
        return [{k: float(v) if v else float("nan") for k, v in row.items()} for row in csv.DictReader(handle)]


def _weights(run: Path) -> list[np.ndarray]:
    from hemoembed.model.encoder import load_encoder

    return [np.array(w) for w in load_encoder(run / "encoder.keras")[0].weights]


@pytest.mark.slow
def test_run_writes_its_outputs_and_the_loss_falls(reference, cells):
    from hemoembed.model.encoder import load_encoder

    saved = json.loads((reference / "config.json").read_text())
    assert saved["preset"] == "scratch" and saved["freeze_bn"] is False and saved["lr_decay"] == "constant"
    assert saved["image_size"] == 32 and saved["augment"]["rotation"] == 0.25
    history = _history(reference)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(np.isfinite(row["loss"]) and np.isfinite(row["val_loss"]) for row in history)
    # 12 steps on 38 images are too few for the loss to fall reliably (see the fixed-batch test below);
    # the unlabelled probe (validation images) reports the embedding's spread every epoch
    assert all(row["embedding_std"] > 0 for row in history)
    assert json.loads((reference / "checkpoints" / "checkpoint.json").read_text())["epoch"] == 3
    assert len(list((reference / "checkpoints").glob("epoch-*.npz"))) == 1  # what --resume needs, no more
    skipped = (reference / "skipped.csv").read_text()
    assert "broken.png" in skipped and skipped.count("\n") == 2
    from hemoembed.data.colour import ReinhardReference
    from hemoembed.data.imageio import load_image

    kept = ReinhardReference.from_json(reference / "colour_reference.json")  # the source style for `adapt`
    raw = [load_image(p) for p in load_manifest(cells).absolute() if not p.endswith("broken.png")]
    assert kept.mean == pytest.approx(ReinhardReference.from_images(raw).mean, abs=0.02)  # raw pixels, training
    assert kept != ReinhardReference.from_images(raw)  # ... images only (the 20% held out are not in it)
    model, record = load_encoder(reference / "encoder.keras")
    assert record.image_size == 32 and record.colour == "grayworld"
    out = model(np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")).numpy()
    assert out.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    from hemoembed.model.encoder import view_average_of

    assert saved["view_average"] == "dihedral" and view_average_of(model) == "dihedral"  # the scratch preset


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "hemoembed", "pretrain", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(reference, cells, tmp_path):
    run = tmp_path / "run"
    proc = _cli(str(cells), "--out", str(run), *ARGS)
    pointer = run / "checkpoints" / "checkpoint.json"
    deadline = time.time() + 600
    while not pointer.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()[-2000:]  # still training when the first epoch is saved
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(pointer.read_text())["epoch"] < 3 and not (run / "encoder.keras").exists()
    (run / "colour_reference.json").unlink()  # a run from before the reference was kept: resuming adds it
    resumed = _cli(str(cells), "--out", str(run), *ARGS, "--resume")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-2000:]
    got, want = _history(run), _history(reference)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    assert (run / "colour_reference.json").read_text() == (reference / "colour_reference.json").read_text()
    for column in ("loss", "val_loss", "lr"):
        np.testing.assert_allclose([r[column] for r in got], [r[column] for r in want], rtol=1e-4, atol=1e-6)
    for a, b in zip(_weights(run), _weights(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_resume_with_a_different_config_is_refused(started, cells):
    result = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(started), *ARGS, "--resume",
                                       "--margin", "0.3"])
    assert result.exit_code == 2
    assert "cannot resume with a different config" in result.output and "margin" in result.output
    assert "(margin: saved 0.5 vs now 0.3)" in result.output  # the one difference: the saved config is ARGS'
    result = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(started), *ARGS, "--resume",
                                       "--resolution", "0.5"])  # the degradation option reaches the config
    assert result.exit_code == 2 and "augment" in result.output and "resolution" in result.output


def test_bad_input_is_one_line_and_exit_2(cells, tmp_path):
    runner = CliRunner()
    few = runner.invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "a"), *ARGS, "--batch-size", "64"])
    assert few.exit_code == 2 and "fewer than one batch of 64" in few.output
    strict = runner.invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "b"), *ARGS, "--strict"])
    assert strict.exit_code == 2 and "broken.png" in strict.output and "not an image" in strict.output
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("x")
    exists = runner.invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "c"), *ARGS])
    assert exists.exit_code == 2 and "--overwrite" in exists.output
    nothing = runner.invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "d"), *ARGS, "--resume"])
    assert nothing.exit_code == 2 and "nothing to resume" in nothing.output
    blur = runner.invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "e"), *ARGS, "--resolution", "1.5"])
    assert blur.exit_code == 2 and "'--resolution': 1.5 is not in the range 0.0<=x<1.0" in blur.output
    assert not (tmp_path / "e").exists()
    for result in (few, strict, exists, nothing, blur):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_failed_start_writes_nothing_so_the_rerun_is_not_refused(cells, tmp_path):
    """Bad weights or options are refused before config.json, colour_reference.json or skipped.csv exist."""
    (tmp_path / "garbage.keras").write_text("not a keras file")
    runner = CliRunner()
    for extra in (["--weights", str(tmp_path / "missing.keras")], ["--weights", str(tmp_path / "garbage.keras")],
                  ["--margin", "-1"], ["--warmup-epochs", "-1"], ["--early-stopping", "-2"]):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        result = runner.invoke(main, ["pretrain", str(cells), "--out", str(out), *ARGS, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists() or not any(out.iterdir()), (extra, sorted(p.name for p in out.iterdir()))


def test_presets_and_overrides():
    assert resolve_config(weights="none").lr == 1e-3
    paper = resolve_config()
    assert (paper.weights, paper.lr, paper.freeze_bn) == ("imagenet", 1e-5, True)
    assert (paper.epochs, paper.batch_size, paper.lr_decay) == (30, 100, "constant")
    mixed = resolve_config(PretrainConfig(preset="scratch", lr=5e-4), epochs=7)
    assert (mixed.weights, mixed.lr, mixed.epochs, mixed.freeze_bn) == ("none", 5e-4, 7, False)


def test_the_site_preset_continues_a_trained_encoder_with_hue_jitter(tmp_path):
    encoder = tmp_path / "encoder.keras"
    encoder.write_bytes(b"")  # only its existence is checked here
    scratch = resolve_config(weights="none")
    site = resolve_config(PretrainConfig(preset="site"), weights=str(encoder))
    assert (site.weights, site.epochs, site.augment.hue) == (str(encoder), 10, 0.2)
    # everything else is the scratch recipe, so a continued encoder trains as its source did
    same = ("loss", "head", "lr", "lr_decay", "freeze_bn", "batch_size", "view_average")
    assert [getattr(site, k) for k in same] == [getattr(scratch, k) for k in same]
    assert dataclasses.replace(site.augment, hue=scratch.augment.hue) == scratch.augment
    assert resolve_config(PretrainConfig(preset="site"), augment={"hue": 0.1}, weights=str(encoder)).augment.hue == 0.1
    for weights in (None, "none", "imagenet"):
        with pytest.raises(InputError, match="--preset site continues a trained encoder"):
            resolve_config(PretrainConfig(preset="site"), weights=weights)


TWO_DEVICES = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from hemoembed.model.distribute import make_strategy
from hemoembed.model.encoder import all_layers
from hemoembed.model.pretrain import make_trainer, resolve_config

loss, head = sys.argv[2], sys.argv[3]
config = resolve_config(weights="none", image_size=32, batch_size=4, epochs=1, freeze_bn=True, dropout=0.0,
                        eager=True, loss=loss, head=head)
views = tf.constant(np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32"))
labels = tf.constant([0, 0, 1, 1, 2, 2, 3, 3], tf.int64)
result = {}
for name in ("one", "mirrored"):
    strategy = make_strategy(name)
    trainer = make_trainer(config, strategy, steps_per_epoch=1)
    for layer in all_layers(trainer.model):
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # stochastic depth off: both runs must see the same forward pass
    with strategy.scope():  # plain SGD with lr 1: the weight change is exactly minus the gradient
        trainer.optimizer = keras.optimizers.SGD(1.0)
        trainer.optimizer.build(trainer.trainable_variables)
    before = [np.array(w) for w in trainer.trainable_variables]
    eval_loss = trainer.eval_batch(views, labels)
    train_loss = trainer.train_batch(views, labels)
    grads = [b - np.array(w) for b, w in zip(before, trainer.trainable_variables)]
    result[name] = {"replicas": strategy.num_replicas_in_sync, "eval": eval_loss, "train": train_loss,
                    "grad_norm": float(np.sqrt(sum((g.astype("float64") ** 2).sum() for g in grads)))}
    np.save(sys.argv[1] + f"/{name}.npy", np.concatenate([g.ravel() for g in grads]))
print("RESULT", json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.parametrize("loss, head", [("semihard", "none"), ("ntxent", "mlp:64,16")])
def test_mirrored_on_two_devices_equals_one_device(tmp_path, loss, head):
    """Mining and the contrastive softmax see the global batch; the head's BatchNorm is synchronised too."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(tmp_path), loss, head], capture_output=True,
                         text=True, env=env, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    one, two = result["one"], result["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["eval"] > 0.1
    assert two["eval"] == pytest.approx(one["eval"], abs=1e-5)
    assert two["train"] == pytest.approx(one["train"], abs=1e-5)
    # the gradient is the single-device one: neither doubled nor halved by the replica count
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-3)
    g1, g2 = np.load(tmp_path / "one.npy"), np.load(tmp_path / "mirrored.npy")
    assert np.abs(g1 - g2).max() <= 1e-3 * np.abs(g1).max()


OLD_RUN_CONFIG = {  # config.json as written by a run of the first release (no head, loss fields of today)
    "augment": {"brightness": 0.2, "contrast": 0.2, "fill_mode": "reflect", "flip": True, "hue": 0.2,
                "resolution": 0.0, "rotation": 0.25, "saturation": 0.2, "translation": 0.09, "zoom": 0.1},
    "batch_size": 100, "cache": True, "colour": "grayworld", "crop_fraction": 0.875, "distance": "L2",
    "dropout": 0.2, "eager": False, "early_stopping": 0, "epochs": 4, "freeze_bn": False, "image_size": 64,
    "jit": False, "keep_checkpoints": 2, "loss": "semihard", "lr": 0.001, "lr_decay": "cosine", "lr_plateau": 0,
    "margin": 0.5, "plateau_factor": 0.5, "precision": "float32", "preset": "scratch", "seed": 0,
    "strategy": "auto", "strict": False, "tensorboard": False, "val_fraction": 0.05, "warmup_epochs": 1.0,
    "weights": "none"}


def test_a_run_saved_before_heads_and_crops_keeps_its_meaning(tmp_path):
    from hemoembed.config import require_same_config
    from hemoembed.model.pretrain_config import load_run_config

    (tmp_path / "config.json").write_text(json.dumps(OLD_RUN_CONFIG))
    old = load_run_config(tmp_path)
    assert (old.loss, old.head, old.augment.crop_scale, old.augment.hue) == ("semihard", "none", None, 0.2)
    assert old.views == 2  # saved before --views: two views, as it was trained
    assert old.record == PreprocessingRecord(64, 0.875, "grayworld", version=1)  # its encoder's record, as saved
    resumed = resolve_config(old)  # what a bare --resume resolves: the preset changes nothing that was saved
    require_same_config(old, resumed, where="test")
    fresh = resolve_config(weights="none")  # a new run gets today's scratch preset
    assert (fresh.loss, fresh.head, fresh.augment.crop_scale) == ("ntxent", "mlp:512,128", (0.3, 1.0))
    assert (fresh.augment.stain, fresh.augment.hue, fresh.views) == (0.05, 0.0, 2)  # measured: stain beats hue
    assert fresh.record.version == RECORD_VERSION  # new encoders get the current record version
    assert (old.view_average, fresh.view_average, resolve_config().view_average) == ("none", "dihedral", "none")
    require_same_config(fresh, resolve_config(weights="none", view_average="none"), where="test",
                        ignore=resume_ignores(fresh))  # inference only: a run may resume with it changed
    assert resolve_config().head == "none" and resolve_config().augment.crop_scale is None  # the paper's


@pytest.mark.slow
def test_probe_scores_each_epoch_and_best_probe_becomes_the_encoder(cells, tmp_path):
    """The probe set is class-per-folder synthetic cells; history gets its columns, encoder.keras the best
    epoch's weights and never the projection head."""
    from hemoembed.model.encoder import load_encoder
    from hemoembed.model.training import load_checkpoint

    probe = tmp_path / "probe"
    make_synthetic_dataset(probe, n_per_class=6, sites=1, size=40, seed=9)
    config = resolve_config(weights="none", image_size=32, epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0.0,
                            val_fraction=0.2, seed=3, probe_labels=str(probe), keep="best-probe")
    lines: list[str] = []
    pretrain(load_manifest(cells), tmp_path / "run", config, log=lines.append)
    history = _history(tmp_path / "run")
    scores = [row["probe_linear_f1"] for row in history]
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert all(0.0 <= row["probe_knn_f1"] <= 1.0 and row["embedding_std"] > 0 for row in history)
    assert any("probe k-NN F1" in line for line in lines)
    best_epoch = int(np.argmax(scores)) + 1
    arrays, meta = load_checkpoint(tmp_path / "run" / "checkpoints" / "best-probe.npz")
    assert meta["epoch"] == best_epoch
    model, _ = load_encoder(tmp_path / "run" / "encoder.keras")
    assert not any("projection" in layer.name for layer in model.layers)
    for i, variable in enumerate(model.variables):  # the checkpoint starts with the encoder's variables
        if "float" in str(variable.dtype):  # (not the dropout seed's state)
            np.testing.assert_array_equal(np.asarray(variable), arrays[f"v{i:05d}"])
    assert model.output_shape == (None, 1280)


def test_probe_labels_follow_the_runs_allow_outside_root(cells, tmp_path):
    """A probe CSV is read against the training images' root under the same --allow-outside-root as they are
    (refused before anything trains; here its missing label column is what stops the allowed run)."""
    probe = tmp_path / "probe.csv"
    probe.write_text("path\n../elsewhere/cell.png\n")
    config = resolve_config(weights="none", image_size=32, epochs=1, batch_size=8, probe_labels=str(probe))
    with pytest.raises(InputError, match="outside the image root"):
        pretrain(load_manifest(cells), tmp_path / "refused", config)
    with pytest.raises(InputError, match="the probe set needs a 'label' column"):
        pretrain(load_manifest(cells, allow_outside_root=True), tmp_path / "allowed", config)
    assert not (tmp_path / "refused").exists() and not (tmp_path / "allowed").exists()


def test_best_probe_without_probe_labels_is_refused_before_writing(cells, tmp_path):
    result = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "r"), *ARGS,
                                       "--keep", "best-probe"])
    assert result.exit_code == 2 and "--keep best-probe needs --probe-labels" in result.output
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    head = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "h"), *ARGS, "--head", "mlp:x"])
    assert head.exit_code == 2 and "expected 'none' or 'mlp:'" in head.output


@pytest.mark.slow  # ~20 s a case on the 2-core machine
@pytest.mark.parametrize("loss, head", [("ntxent", "mlp:64,16"), ("semihard", "none")])
def test_training_steps_lower_the_loss_on_a_fixed_batch(loss, head):
    """The mechanics learn: 20 steps on one two-view batch (noise as the 'augmentation') cut the loss."""
    import tensorflow as tf

    from hemoembed.model.distribute import make_strategy
    from hemoembed.model.pretrain import make_trainer

    config = resolve_config(weights="none", image_size=32, batch_size=8, epochs=1, loss=loss, head=head, lr=1e-3,
                            warmup_epochs=0.0)
    trainer = make_trainer(config, make_strategy("one"), steps_per_epoch=20)
    rng = np.random.default_rng(0)
    images = np.repeat(rng.uniform(0, 255, (8, 32, 32, 3)), 2, axis=0)
    views = tf.constant((images + rng.normal(0, 8, images.shape)).astype("float32"))
    labels = tf.constant(np.repeat(np.arange(8), 2), tf.int64)
    losses = [trainer.train_batch(views, labels) for _ in range(20)]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses


@pytest.mark.slow  # ~25 s on the 2-core machine
def test_three_views_train_and_are_saved(cells, tmp_path):
    """``--views 3`` runs end to end (batches of 3 x batch-size views), is saved, and refuses a resume
    with another number of views; fewer than two views is a one-line error."""
    config = resolve_config(_config(), epochs=1, views=3)
    pretrain(load_manifest(cells), tmp_path / "run", config, log=lambda _: None)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["views"] == 3
    (loss,) = [row["loss"] for row in _history(tmp_path / "run")]
    assert np.isfinite(loss) and loss > 0.0
    resumed = CliRunner().invoke(main, ["pretrain", str(cells), "--out", str(tmp_path / "run"), *ARGS, "--views",
                                        "2", "--epochs", "1", "--resume"])
    assert resumed.exit_code == 2 and "views" in resumed.output and "Traceback" not in resumed.output
    with pytest.raises(InputError, match="--views 1: must be between 2 and 16"):
        resolve_config(weights="none", views=1)
