"""The README works as written: its Python API example runs (synthetic cells, a fresh process), its commands
name real options, its outputs are ignored."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO, ignored_by, unknown_options


def readme_python_api() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_uses_the_public_api_only():
    code = readme_python_api()
    assert "import hemoembed as he" in code and "from hemoembed." not in code


@pytest.mark.slow
def test_the_python_api_example_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    run = subprocess.run([sys.executable, "-c", readme_python_api()], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line.split(" ", 1)[0] in
                 ("macro-F1", "labels", "new", "placed", "reloaded"))
    assert set(lines) == {"macro-F1", "labels", "new", "placed", "reloaded"}, run.stdout[-2000:]
    assert lines["reloaded"].startswith("label [")
    assert lines["labels"].startswith("used 25 ")  # 10 to start, then 3 queries of 5
    assert lines["placed"] == "(15, 2)"
    assert (tmp_path / "runs" / "demo" / "encoder.keras").is_file() and (tmp_path / "stores" / "demo").is_dir()
    assert (tmp_path / "svm_demo" / "model.skops").is_file()


def test_every_output_the_readme_writes_is_git_and_docker_ignored():
    """Run from the repository root, the README's commands write runs/, stores/, maps/...: none may be
    committed by accident or sent into a Docker build."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|python)\n(.*?)```", text, re.S)
    outputs = set()
    for block in blocks:
        for path in re.findall(r"(?:--out|--store|--reference|--gallery|\bout=|\bstore=)[ =]?\"?([\w./-]+)", block):
            if not path.startswith("/"):  # absolute paths are inside a container (the Docker section)
                outputs.add(path.split("/")[0])
        outputs.update(re.findall(r"\.save\(\"([\w-]+)\"", block))
    outputs.discard("..")
    assert {"runs", "stores", "maps", "svm_wbcatt", "bccd_norm", "pbc_ref.json", "svm_demo"} <= outputs, outputs
    for name in sorted(outputs):
        assert ignored_by(name, ".gitignore"), f"{name} is not in .gitignore"
        assert ignored_by(name, ".dockerignore"), f"{name} is not in .dockerignore"


def readme_commands() -> list[list[str]]:
    """The words of every ``hemoembed`` command in the README's bash blocks (inside ``docker run`` too, from
    the subcommand on), continuation lines joined and comments dropped."""
    import shlex

    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(" #")[0].rstrip(" &").split("&&"):
                words = shlex.split(part)
                image = [i for i, w in enumerate(words) if w.startswith("hemoembed:")]
                if words[:1] == ["docker"] and words[1:2] == ["run"] and image and "--entrypoint" not in words:
                    commands.append(["hemoembed", *words[image[0] + 1:]])
                elif words[:1] == ["hemoembed"] and len(words) > 1 and not words[1].startswith("-"):
                    commands.append(words)
    return commands


def test_every_readme_command_names_a_real_command_and_its_real_options():
    commands = readme_commands()
    assert len(commands) > 15 and ["hemoembed", "check", "/data", "--out", "/runs/rejects.csv"] in commands
    for words in commands:
        unknown = unknown_options(words)
        assert not unknown, f"{' '.join(words)}: no option {unknown}"
    named = set(re.findall(r"scripts/([\w.]+\.(?:py|sh|json))", (REPO / "README.md").read_text()))
    assert named and all((REPO / "scripts" / name).is_file() for name in named), named
