"""Shared fixtures: real-data location, tiny images, and a CLI runner that reports exit code and stderr."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke_cli, run_cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# TensorFlow's thread pools default to one thread per core in every process; three xdist workers (and their
# subprocesses) on two cores then spin against each other. A share of the cores each cut the CPU time of two
# training tests by 9-17 % (-n 3, two runs each way, 2026-12-02; RESULTS, "Test suite time"). Subprocesses
# inherit it; an explicit setting wins.
_THREADS = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", _THREADS)
os.environ.setdefault("TF_NUM_INTEROP_THREADS", _THREADS)

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


@pytest.fixture
def cli():
    """``cli(*args)``: one command in this process (:func:`invoke_cli`)."""
    return invoke_cli


@pytest.fixture
def shell_cli():
    """``shell_cli(*args)``: one command in a real subprocess (:func:`run_cli`)."""
    return run_cli
