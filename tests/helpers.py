"""Shared test builders (importable from every test folder: ``tests/`` is on pytest's ``pythonpath``)."""
from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SIZE = 32  # adapter tests' encoder input side: tiny for speed on 2 shared cores


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that ``build(folder)`` fills once per test session, whichever pytest-xdist worker asks first;
    the others wait for it and reuse it. A module fixture set up twice (its tests spread over workers, or
    torn down between them) otherwise trains twice: 78-156 s each for the pretraining fixtures (RESULTS, "Test
    suite time"). Callers copy what they change."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's folder, not older ones
    folder, done = root / f"built-{name}", root / f"built-{name}.done"
    with open(root / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if build raises
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed part-way is started again
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def write_store(directory: Path, X: np.ndarray, labels: np.ndarray, fingerprint: str = "f" * 64):
    """A real on-disk embedding store holding ``X`` (paths ``<label>/img_<i>.png``, column ``label``)."""
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.store.store import EmbeddingStore, make_part_table

    store = EmbeddingStore.create(directory, fingerprint, PreprocessingRecord(image_size=32), X.shape[1])
    paths = [f"{c}/img_{i:04d}.png" for i, c in enumerate(labels)]
    store.append(make_part_table(paths, ["0" * 64] * len(paths), [32] * len(paths), [32] * len(paths), X,
                                 {"label": list(labels)}))
    return EmbeddingStore.open(directory)


def traced_peak(action: Callable[[], Any]) -> tuple[int, Any]:
    """``(peak bytes traced by tracemalloc while action() ran, its result)``: memory bounds without timing."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = action()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def write_parts(directory: Path, X: np.ndarray, y: np.ndarray, rows: int = 1000):
    """A store of ``X`` in parts of ``rows`` rows, as a store is written (a read holds one part)."""
    from hemoembed.store.store import EmbeddingStore, make_part_table

    store = write_store(directory, X[:rows].astype(np.float32), y[:rows])
    for start in range(rows, len(X), rows):
        paths = [f"{c}/img_{i:05d}.png" for i, c in enumerate(y[start:start + rows], start)]
        store.append(make_part_table(paths, ["0" * 64] * len(paths), [32] * len(paths), [32] * len(paths),
                                     X[start:start + rows].astype(np.float32), {"label": list(y[start:start + rows])}))
    return EmbeddingStore.open(directory)


def make_sites(root: Path, n_per_class: int = 8, size: int = 48, image_size: int = SIZE) -> dict[str, Path]:
    """Synthetic cells of 3 sites, one CSV manifest per site (``site0`` is the source) and a source encoder
    (``run/encoder.keras``, random weights, input side ``image_size``)."""
    import keras

    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.data.synthetic import make_synthetic_dataset
    from hemoembed.model.encoder import build_encoder, save_encoder

    out = site_paths(root)
    manifest = load_manifest(make_synthetic_dataset(root / "cells", n_per_class=n_per_class, sites=3, size=size,
                                                    seed=0))
    for s in range(3):
        rows = [i for i, v in enumerate(manifest.column("site")) if v == f"site{s}"]
        manifest.subset(rows).write_csv(out[f"site{s}"])
    keras.utils.set_random_seed(0)
    save_encoder(build_encoder(PreprocessingRecord(image_size, 0.875, "grayworld"), "none"),
                 out["run"] / "encoder.keras")
    return out


def site_paths(root: Path) -> dict[str, Path]:
    """Where :func:`make_sites` puts each site's CSV manifest and the source run, under ``root``."""
    return {**{f"site{s}": root / "cells" / f"site{s}.csv" for s in range(3)}, "run": root / "run"}


def power_law_rows(curves: dict[str, dict[str, tuple]], full: dict[str, float],
                   n: np.ndarray = np.arange(90, 9000, 180, dtype=float)) -> list[dict]:
    """Tidy active-learning rows: per strategy and class (``macro`` for macro-F1) a curve ``(pmax, k, r)``
    sampled at ``n`` labels, plus the all-labels score of every class in ``full``."""
    from hemoembed.tasks.active import ALL_LABELS
    from hemoembed.tasks.active.power_law import MACRO, power_law

    rows = []
    for strategy, per_class in curves.items():
        for cls, (pmax, k, r) in per_class.items():
            metric, name = ("macro_f1", "") if cls == MACRO else ("f1", cls)
            for i, (labels, value) in enumerate(zip(n, power_law(n, pmax, k, 0.0, r))):
                rows.append({"strategy": strategy, "repeat": 0, "iteration": i, "n_labels": int(labels),
                             "metric": metric, "class": name, "value": float(value)})
    for cls, value in full.items():
        metric, name = ("macro_f1", "") if cls == MACRO else ("f1", cls)
        rows.append({"strategy": ALL_LABELS, "repeat": 0, "iteration": 0, "n_labels": int(n[-1]),
                     "metric": metric, "class": name, "value": value})
    return rows


def assert_readable_png(path: Path, *, max_side: int = 2700, min_side: int = 300, max_aspect: float = 3.2) -> tuple:
    """A figure a person can read on a screen: neither side over ``max_side`` px or under ``min_side`` px, no
    strip wider (or taller) than ``max_aspect`` : 1, and not blank. Returns ``(width, height)``."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("L"))
    assert min_side <= min(width, height) and max(width, height) <= max_side, f"{path}: {width}x{height} px"
    assert max(width, height) / min(width, height) <= max_aspect, f"{path}: {width}x{height} px is a strip"
    assert pixels.std() > 5, f"{path}: blank"
    return width, height


def run_script(name: str, *args, check: bool = True):
    """Run ``scripts/<name>`` as a user would, with this checkout's package first on the path."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, check=check, env=env)


def multipart(files: list[tuple[str, bytes]]) -> list:
    """``(name, bytes)`` pairs as the ``files`` field of a multipart upload (httpx / TestClient ``files=``)."""
    return [("files", (name, data, "application/octet-stream")) for name, data in files]


def wait_until(predicate, timeout: float = 120.0):
    """Poll ``predicate`` until it returns something true (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


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


def encoded_cell(kind: str) -> bytes:
    """A 96 x 80 textured cell in one of the formats the intake accepts (JPEG in three encodings)."""
    yy, xx = np.mgrid[0:80, 0:96]
    rgb = np.stack([(xx * 3 + yy) % 256, (yy * 5) % 256, ((xx - yy) * 7) % 256], -1).astype(np.uint8)
    noise = np.random.default_rng(3).integers(0, 40, rgb.shape, dtype=np.uint8)
    image = Image.fromarray(rgb + noise)
    fmt, options = {"jpeg": ("JPEG", {}), "jpeg-progressive": ("JPEG", {"progressive": True}),
                    "jpeg-gray": ("JPEG", {}), "png": ("PNG", {}), "bmp": ("BMP", {}),
                    "tiff": ("TIFF", {}), "tiff-lzw": ("TIFF", {"compression": "tiff_lzw"})}[kind]
    buffer = io.BytesIO()
    (image.convert("L") if kind == "jpeg-gray" else image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def full_decode_error(data: bytes) -> str | None:
    """The oracle: Pillow's full-size decode of every pixel (what the probe did before it decoded a JPEG at
    1/8 scale); its exception text, or None when the file decodes."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Image.UnidentifiedImageError:
        return "unrecognised format"
    except (OSError, SyntaxError, ValueError) as exc:
        return str(exc)
    return None



def ignored_by(name: str, ignore_file: str) -> bool:
    """Whether a top-level file or folder ``name`` matches a pattern of the repository's ``ignore_file``
    (.gitignore, .dockerignore)."""
    from fnmatch import fnmatch

    patterns = [line.strip().strip("/") for line in (REPO / ignore_file).read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return any(fnmatch(name, pattern) for pattern in patterns)


def unknown_options(words: list[str]) -> list[str]:
    """The options of a typed ``hemoembed COMMAND ...`` (a sub-group's command too) that its command does not
    have; an unknown command is an AssertionError naming the line."""
    from hemoembed.cli import main

    assert words[0] == "hemoembed" and words[1] in main.commands, " ".join(words)
    command, rest = main.commands[words[1]], words[2:]
    if hasattr(command, "commands"):
        command, rest = command.commands[rest[0]], rest[1:]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    return [w for w in rest if w.startswith("-") and w.split("=")[0] not in options]
