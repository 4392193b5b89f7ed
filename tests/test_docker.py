"""The README's Docker commands work as written: build the CPU image, run it as the caller on a mounted
folder, run the demo script inside it. Needs a Docker engine; skipped, saying why, where there is none."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from helpers import REPO, ignored_by


def readme_docker_commands() -> list[str]:
    """The CPU commands of the README's Docker section, continuation lines joined (GPU ones need a GPU)."""
    section = (REPO / "README.md").read_text().split("## Docker\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = block.replace("\\\n", " ").splitlines()
    return [c.strip() for c in commands if c.strip() and "gpu" not in c]


def docker_engine() -> str | None:
    """Why there is no usable Docker engine here, or None when there is one."""
    if shutil.which("docker") is None:
        return "no docker command on this machine"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=60)
    if info.returncode != 0 or not info.stdout.strip():
        return f"no Docker engine reachable ({(info.stderr.strip().splitlines() or ['docker info failed'])[-1]})"
    return None


def test_the_readme_documents_user_mounts_and_scripts():
    commands = readme_docker_commands()
    assert commands[0] == "docker build -f docker/Dockerfile.cpu -t hemoembed:cpu ."
    assert "mkdir -p runs" in commands  # a mount point Docker creates would belong to root
    runs = [c for c in commands if c.startswith("docker run")]
    assert runs and all('--user "$(id -u):$(id -g)"' in c and '-v "$PWD/runs:/runs"' in c for c in runs)
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (REPO / "docker" / name).read_text()
        assert "COPY scripts ./scripts" in text and "chmod 1777 /runs" in text
    assert "scripts" not in (REPO / ".dockerignore").read_text().split()


def test_what_the_images_copy_exists_and_is_not_docker_ignored():
    """The ignore entries for outputs (runs, cams, run, review...) never hide a file the image build copies."""
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        copied = [w for line in (REPO / "docker" / name).read_text().splitlines() if line.startswith("COPY ")
                  for w in line.split()[1:-1]]
        assert {"setup.py", "hemoembed", "scripts"} <= set(copied), (name, copied)
        for path in copied:
            assert (REPO / path).exists() and not ignored_by(path, ".dockerignore"), (name, path)


def test_the_demo_script_finds_its_scripts_from_any_folder():
    """The image runs demo.sh from /runs (and the build-and-run check below skips the demo for time), so every
    script it calls is addressed through its own folder, never through the working directory."""
    text = (REPO / "scripts" / "demo.sh").read_text()
    assert 'SCRIPTS=$(dirname "$0")' in text
    called = re.findall(r'python "\$SCRIPTS/([\w.]+)"', text)
    assert called and len(called) == len(re.findall(r"\bpython\s", text))
    assert all((REPO / "scripts" / name).is_file() for name in [*called, "demo_pretrain.json"])
    assert '--config "$SCRIPTS/demo_pretrain.json"' in text

@pytest.mark.slow
def test_readme_docker_commands_build_and_run(tmp_path):
    why = docker_engine()
    if why:
        pytest.skip(f"{why}: the image build-and-run check runs wherever CI has a Docker engine")
    from hemoembed.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "cells", n_per_class=3, sites=1, size=48, seed=0)
    for command in readme_docker_commands():
        command = command.replace("/path/to/cells", str(tmp_path / "cells"))
        if "demo.sh" in command:
            continue  # the whole demo takes minutes; the image's scripts are checked below
        cwd = REPO if command.startswith("docker build") else tmp_path
        done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=3600)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    rejects = tmp_path / "runs" / "rejects.csv"
    assert rejects.is_file() and rejects.stat().st_uid == os.getuid()  # written by the caller, into the mount
    scripts = subprocess.run(["docker", "run", "--rm", "--entrypoint", "ls", "hemoembed:cpu", "/opt/hemoembed/scripts"],
                             capture_output=True, text=True, timeout=600)
    assert "demo.sh" in scripts.stdout and "fig_tsne.py" in scripts.stdout
