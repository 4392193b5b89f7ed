"""Shared fixtures: real-data location, tiny images, and a CLI runner that reports exit code and stderr."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def pytest_collection_modifyitems(config, items):
    """Skip ``realdata`` tests, with the reason, when ../shared/data is absent."""
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real data folder {SHARED_DATA} is absent")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def write_image(path: Path, size: tuple[int, int] = (40, 40), seed: int = 0, fmt: str | None = None,
                mode: str = "RGB") -> Path:
    """A small random image file (any Pillow format)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path, format=fmt)
    return path


def make_png_bomb(side: int) -> bytes:
    """A valid all-black grayscale PNG of ``side`` x ``side`` built without holding its pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), b"\0" * (side + 1)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def png_bomb():
    """``png_bomb(side)``: bytes of a valid all-black PNG of side x side pixels (a few hundred KB for 8000)."""
    return make_png_bomb


@pytest.fixture(scope="session")
def saved_encoder(tmp_path_factory):
    """(model, path): a 32-px encoder with random weights (seed 0), saved as .keras; never modify it."""
    import keras

    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.encoder import build_encoder, save_encoder

    keras.utils.set_random_seed(0)
    model = build_encoder(PreprocessingRecord(image_size=32), "none")
    path = tmp_path_factory.mktemp("encoder") / "encoder.keras"
    save_encoder(model, path)
    return model, path


@pytest.fixture
def image_factory(tmp_path):
    return lambda rel, **kw: write_image(tmp_path / rel, **kw)


class CliResult:
    """What a user sees of one ``hemoembed`` command: exit code, stdout, stderr."""

    def __init__(self, exit_code: int, stdout: str, stderr: str):
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return f"exit {self.exit_code}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> CliResult:
    """Run ``python -m hemoembed ARGS`` in a real subprocess (exit codes and stderr as a user sees them)."""
    proc = subprocess.run([sys.executable, "-m", "hemoembed", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def invoke_cli(*args: str) -> CliResult:
    """Run ``hemoembed ARGS`` in this process (click's runner): what :func:`run_cli` reports, without a new
    interpreter importing TensorFlow and loading the encoder again (seconds a call). An exception that escapes
    the command is a traceback on stderr and exit 1, as Python shows it; Python warnings the command raises
    are on stderr as in a shell (default filters). For tests of a command's work; a test of the process itself
    (signals, startup, import-time output) uses :func:`run_cli`."""
    import traceback
    import warnings

    from click.testing import CliRunner

    from hemoembed.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # a fresh interpreter's filters: DeprecationWarning and the like stay quiet
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)  # (inserted before "default": checked first)
        result = CliRunner().invoke(main, [str(a) for a in args], prog_name="hemoembed")
    stderr = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    stderr += result.stderr
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return CliResult(result.exit_code, result.stdout, stderr)


@pytest.fixture
def cli():
    """``cli(*args)``: one command in this process (:func:`invoke_cli`)."""
    return invoke_cli


@pytest.fixture
def shell_cli():
    """``shell_cli(*args)``: one command in a real subprocess (:func:`run_cli`)."""
    return run_cli
