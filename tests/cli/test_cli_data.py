"""CLI conventions and the data commands, exercised as a user would: exit codes, stdout, stderr. The
conventions (version, exit 2, one line, --debug) and `check` run in a real subprocess; the commands that decode
images (TensorFlow, seconds to import) run in-process (`cli`)."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, ignored_by, unknown_options
from PIL import Image

from hemoembed import __version__


def _dataset(tmp_path, image_factory):
    for i in range(3):
        image_factory(f"ds/a/{i}.png", seed=i)
        image_factory(f"ds/b/{i}.jpg", seed=10 + i)
    return tmp_path / "ds"


def test_version_and_every_command_has_an_example(shell_cli):
    from hemoembed.cli import main

    assert shell_cli("--version").stdout.strip().endswith(__version__)
    for name, command in main.commands.items():
        if hasattr(command, "commands"):  # a sub-group: check its commands too
            subs = [(f"{name} {sub}", c) for sub, c in command.commands.items()]
        else:
            subs = [(name, command)]
        for full, sub in subs:
            assert "Example" in (sub.help or ""), f"`hemoembed {full} --help` has no example"


def _help_texts() -> dict[str, str]:
    """``hemoembed [COMMAND] --help`` as printed, for the group and every command (sub-group commands too)."""
    from click.testing import CliRunner

    from hemoembed.cli import main

    names = [[]] + [[n] for n, c in main.commands.items() if not hasattr(c, "commands")]
    names += [[n, sub] for n, c in main.commands.items() if hasattr(c, "commands") for sub in c.commands]
    return {" ".join(name): CliRunner().invoke(main, [*name, "--help"], terminal_width=100).output for name in names}


def _example_blocks(text: str) -> list[list[str]]:
    """The help's "Example" blocks, each the command lines it shows in order (continuation lines joined)."""
    blocks: list[list[str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Example"):
            blocks.append([])
        elif blocks and (current or stripped.startswith("hemoembed ")):
            current = f"{current} {stripped}".strip()
            if current.endswith("\\"):
                current = current[:-1].rstrip()
            else:
                blocks[-1].append(current)
                current = ""
    return blocks


def _commands(line: str) -> list[list[str]]:
    """The words of each ``hemoembed`` command on an example line (a comment, ``&`` and ``&&`` removed)."""
    line = line.split(" #")[0].rstrip(" &")
    return [shlex.split(part) for part in line.split("&&")]


def test_every_help_text_reads_as_printed():
    """No escaped percent signs ("95%%"), no example joined into one line by a single backslash in the source,
    and no example that cannot work (labels are never in a store)."""
    for name, text in _help_texts().items():
        assert "%%" not in text, f"hemoembed {name} --help"
        for line in text.splitlines():
            if line.strip().startswith("hemoembed "):
                assert not re.search(r"\S {3,}--", line), f"hemoembed {name} --help: {line}"
            if line.strip().startswith("hemoembed fit-svm") and "--columns label" in line:
                assert "--labels" in line, line


def test_every_example_names_a_real_command_and_its_real_options():
    seen = 0
    for name, text in _help_texts().items():
        for line in (line for block in _example_blocks(text) for line in block):
            for words in _commands(line):
                unknown = unknown_options(words)
                assert not unknown, f"hemoembed {name} --help: {line}: no option {unknown}"
                seen += 1
    assert seen > 40  # the parser found the examples


def test_every_output_a_help_example_writes_is_git_and_docker_ignored():
    """Typed from the repository root, the examples write runs/, cams/, rejects.csv...: none may be committed by
    accident or sent into a Docker build (the README's own commands: tests/test_readme.py)."""
    writes = ("--out", "--gallery", "--session", "--data")
    outputs = set()
    for text in _help_texts().values():
        for line in (line for block in _example_blocks(text) for line in block):
            for words in _commands(line):
                paths = [words[i + 1] for i, w in enumerate(words[:-1]) if w in writes]
                if words[1] in ("demo-data", "embed"):
                    paths += [words[2]] if words[1] == "demo-data" else [words[words.index("--store") + 1]]
                outputs.update(p.split("/")[0] for p in paths if not p.startswith(("/", "..")))
    assert {"cams", "rejects.csv", "baseline_demo", "svm_pbc8", "runs"} <= outputs, outputs
    for name in sorted(outputs):
        assert ignored_by(name, ".gitignore"), f"{name} is not in .gitignore"
        assert ignored_by(name, ".dockerignore"), f"{name} is not in .dockerignore"


# The examples on synthetic cells make their own data: each runs as written, in a fresh folder, in order.
SYNTHETIC = {name: block for name, text in _help_texts().items() for block in _example_blocks(text)
             if block and block[0].startswith("hemoembed demo-data ")}


def test_the_synthetic_examples_are_found():
    assert {"", "demo-data", "pretrain", "adapt", "baseline"} <= set(SYNTHETIC)


@pytest.mark.slow  # pretraining, adapting and a baseline at 64 px: 3.5 min wall in all (2 cores, load 4-5)
@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_the_synthetic_examples_run_as_written(name, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    for line in SYNTHETIC[name]:
        for words in _commands(line):
            done = subprocess.run([sys.executable, "-m", *words], cwd=tmp_path, capture_output=True, text=True,
                                  env=env, timeout=1800)
            assert done.returncode == 0, (f"hemoembed {name} --help: {line}", done.stderr[-2000:])
            for option in ("--out", "--store"):
                if option in words:
                    assert (tmp_path / words[words.index(option) + 1]).exists(), (line, option)


def test_check_clean_dataset_exits_0(shell_cli, tmp_path, image_factory):
    result = shell_cli("check", _dataset(tmp_path, image_factory), "--out", tmp_path / "rejects.csv")
    assert result.exit_code == 0, result
    assert "6 images, 6 usable, 0 rejected" in result.stdout
    assert "classes: a 3, b 3" in result.stdout
    assert (tmp_path / "rejects.csv").read_text().strip() == "path,reason"


def test_check_reports_every_kind_of_reject_and_exits_2(shell_cli, tmp_path, image_factory):
    ds = _dataset(tmp_path, image_factory)
    (ds / "a" / "broken.png").write_text("hello")
    (ds / "a" / "empty.jpg").write_bytes(b"")
    (ds / "b" / "cut.jpg").write_bytes((ds / "b" / "0.jpg").read_bytes()[:150])
    (ds / "b" / "copy.png").write_bytes((ds / "a" / "0.png").read_bytes())
    image_factory("ds/b/tiny.png", size=(8, 8))
    result = shell_cli("check", ds, "--out", tmp_path / "rejects.csv")
    assert result.exit_code == 2, result
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and error[0].startswith(
        "error: 4 of 11 images cannot be used; the first is a/broken.png: not an image") and error[0].endswith(
        ". Pass --out FILE.csv for the full list.")
    assert "('" not in result.stderr and "')" not in result.stderr  # sentences, never a repr
    rows = {r["path"]: r["reason"] for r in csv.DictReader(open(tmp_path / "rejects.csv"))}
    assert rows["a/broken.png"].startswith("not an image")
    assert rows["a/empty.jpg"] == "empty file"
    assert rows["b/cut.jpg"].startswith("truncated image")
    assert rows["b/copy.png"].startswith("duplicate of a/0.png")
    assert rows["b/tiny.png"].startswith("tiny image (8x8")
    assert len(rows) == 5 and "11 images, 7 usable, 4 rejected" in result.stdout


def test_check_lists_duplicates_as_a_warning_and_strict_refuses_them(shell_cli, tmp_path, image_factory):
    ds = _dataset(tmp_path, image_factory)
    for i in range(4):
        (ds / "b" / f"copy{i}.png").write_bytes((ds / "a" / "0.png").read_bytes())
    result = shell_cli("check", ds, "--out", tmp_path / "findings.csv")
    assert result.exit_code == 0, result
    assert "10 images, 10 usable, 0 rejected" in result.stdout
    assert result.stderr.strip() == (
        "warning: 4 file(s) are byte-identical copies of another file and count twice if kept: b/copy0.png is a "
        "copy of a/0.png; b/copy1.png is a copy of a/0.png; b/copy2.png is a copy of a/0.png (and 1 more).")
    rows = list(csv.DictReader(open(tmp_path / "findings.csv")))
    assert [r["path"] for r in rows] == [f"b/copy{i}.png" for i in range(4)]
    strict = shell_cli("check", ds, "--strict")
    assert strict.exit_code == 2 and "Traceback" not in strict.stderr
    assert strict.stderr.splitlines()[-1] == ("error: --strict: 4 duplicate(s) and 0 ignored non-image file(s) "
                                              "count as errors (see the warnings above).")
    (ds / "manifest.csv").write_text("path,label\n")  # tables beside the images are expected, not warned about
    (ds / "notes.txt").write_text("not an image")
    assert shell_cli("check", ds).exit_code == 0
    (ds / "b" / "copy0.png").unlink()
    (ds / "b" / "copy1.png").unlink()
    (ds / "b" / "copy2.png").unlink()
    (ds / "b" / "copy3.png").unlink()
    ignored = shell_cli("check", ds, "--strict")
    assert ignored.exit_code == 2 and "1 non-image file(s) were ignored, for example notes.txt." in ignored.stderr


def test_check_manifest_with_missing_file(shell_cli, tmp_path, image_factory):
    image_factory("imgs/1.png")
    (tmp_path / "m.csv").write_text("path,label\n1.png,x\n2.png,y\n")
    result = shell_cli("check", tmp_path / "m.csv", "--image-root", tmp_path / "imgs")
    assert result.exit_code == 2 and "2.png" in result.stderr and "missing file" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["check", "{tmp}/nope"], "nope: no such folder or manifest"),
    (["check", "{tmp}/bad.csv"], "bad.csv: no 'path' column (columns: file)"),
    (["check", "{tmp}/escape.csv"], "escape.csv:2: path '../../etc/passwd' is outside the image root"),
    (["normalize", "{tmp}/ds", "--method", "reinhard", "--out", "{tmp}/n"], "--method reinhard needs --reference"),
    (["normalize", "{tmp}/ds", "--method", "reinhard", "--reference", "{tmp}/bad.csv", "--out", "{tmp}/n"],
     "bad.csv"),
])
def test_bad_input_is_one_line_exit_2(shell_cli, tmp_path, image_factory, args, message):
    _dataset(tmp_path, image_factory)
    (tmp_path / "bad.csv").write_text("file\nx\n")
    (tmp_path / "escape.csv").write_text("path\n../../etc/passwd\n")
    result = shell_cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(shell_cli, tmp_path):
    result = shell_cli("--debug", "check", tmp_path / "nope")
    assert result.exit_code != 0 and "Traceback" in result.stderr


def test_outputs_are_never_silently_overwritten(cli, tmp_path, image_factory):
    ds = _dataset(tmp_path, image_factory)
    out = tmp_path / "norm"
    assert cli("normalize", ds, "--method", "grayworld", "--out", out).exit_code == 0
    before = (out / "a" / "0.png").read_bytes()
    again = cli("normalize", ds, "--method", "grayworld", "--out", out)
    assert again.exit_code == 2 and "use --overwrite" in again.stderr
    assert (out / "a" / "0.png").read_bytes() == before
    assert cli("normalize", ds, "--method", "grayworld", "--out", out, "--overwrite").exit_code == 0


def test_grayworld_normalize_equalises_channel_means(cli, tmp_path):
    tinted = np.zeros((32, 32, 3), np.uint8)
    tinted[..., 0], tinted[..., 1], tinted[..., 2] = 200, 120, 60
    tinted[8:24, 8:24] = (150, 50, 90)
    Image.fromarray(tinted).save((tmp_path / "ds").mkdir() or tmp_path / "ds" / "t.png")
    assert cli("normalize", tmp_path / "ds", "--method", "grayworld", "--out", tmp_path / "o").exit_code == 0
    out = np.asarray(Image.open(tmp_path / "o" / "t.png")).reshape(-1, 3).mean(0)
    assert np.ptp(out) < 1.5
    assert (tmp_path / "o" / "manifest.csv").read_text().splitlines()[1] == "t.png"


def test_demo_data_reference_and_reinhard_normalize(cli, tmp_path):
    result = cli("demo-data", tmp_path / "cells", "--n-per-class", "3", "--sites", "2", "--size", "48")
    assert result.exit_code == 0, result
    rows = list(csv.DictReader(open(tmp_path / "cells" / "manifest.csv")))
    assert len(rows) == 3 * 2 * 5 and set(rows[0]) == {"path", "label", "site"}
    ref = tmp_path / "ref.json"
    assert cli("colour-reference", tmp_path / "cells", "--out", ref, "--sample", "10").exit_code == 0
    stats = json.loads(ref.read_text())
    assert len(stats["mean"]) == 3 and all(s > 0 for s in stats["std"])
    assert cli("colour-reference", tmp_path / "cells", "--out", ref).exit_code == 2  # exists
    out = tmp_path / "norm"
    result = cli("normalize", tmp_path / "cells" / "manifest.csv", "--method", "reinhard", "--reference", ref,
                 "--out", out)
    assert result.exit_code == 0, result
    assert len(list(out.rglob("*.png"))) == 30
    assert list(csv.DictReader(open(out / "manifest.csv")))[0]["site"] in ("site0", "site1")


@pytest.mark.realdata
def test_check_bccd_reports_five_classes(shell_cli, shared_data):
    result = shell_cli("check", shared_data / "bccd")
    assert result.exit_code == 0, result
    assert "351 images, 351 usable, 0 rejected" in result.stdout
    assert "classes: Basophil 3, Eosinophil 88, Lymphocyte 33, Monocyte 20, Neutrophil 207" in result.stdout


@pytest.mark.realdata
def test_check_wbcatt_manifest_sample(shell_cli, shared_data, tmp_path):
    lines = (shared_data / "wbcatt" / "pbc_attr_v1_val.csv").read_text().splitlines()
    (tmp_path / "sample.csv").write_text("\n".join(lines[:201]) + "\n")
    result = shell_cli("check", tmp_path / "sample.csv", "--image-root", shared_data / "pbc256")
    assert result.exit_code == 0, result
    assert "200 images, 200 usable" in result.stdout


@pytest.mark.realdata
def test_check_wbcatt_test_split_warns_of_pbc_duplicates_and_exits_0(shell_cli, shared_data):
    """PBC holds byte-identical files: the official WBCAtt test CSV is usable, with a warning naming them."""
    result = shell_cli("check", shared_data / "wbcatt" / "pbc_attr_v1_test.csv", "--image-root", shared_data / "pbc256")
    assert result.exit_code == 0, result
    assert "3099 images, 3099 usable, 0 rejected" in result.stdout
    assert result.stderr.startswith("warning: 1 file(s) are byte-identical copies of another file")
    assert "EO_941266.jpg is a copy of PBC_dataset_normal_DIB/eosinophil/EO_994040.jpg" in result.stderr
    assert shell_cli("check", shared_data / "wbcatt" / "pbc_attr_v1_test.csv", "--image-root", shared_data / "pbc256",
               "--strict").exit_code == 2
