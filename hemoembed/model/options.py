"""Option values of the encoder, its head and its loss, checked without loading Keras.

A typo in ``--head`` or ``--temperature``, or an encoder file that is not there, is an input error a user
should see at once: these checks run while the configuration is resolved, before TensorFlow (several
seconds to import) is loaded. The Keras modules that use the values (:mod:`.heads`, :mod:`.contrastive`,
:mod:`.encoder`) import them from here.
"""
from __future__ import annotations

import math
import os
from numbers import Real
from pathlib import Path
from typing import Any

from ..errors import InputError

NO_HEAD = "none"
DEFAULT_TEMPERATURE = 0.2
WEIGHTS_KINDS = "imagenet, none, a .keras encoder, an adapter's encoder.json or .h5 backbone weights"
# How inference averages an image's symmetric views (``--view-average``): none, or the eight dihedral views
# (rotations by 90° and mirror images). benchmarks/RESULTS.md, "Averaging the dihedral views": 4 epochs on
# 6,000 PBC images, linear probe 0.822 → 0.897 and 0.810 → 0.895 (two training seeds), no training change.
VIEW_AVERAGES = ("none", "dihedral")


def check_view_average(view_average: str) -> None:
    """One-line error for a ``--view-average`` that is not one of :data:`VIEW_AVERAGES`."""
    if view_average not in VIEW_AVERAGES:
        raise InputError(f"--view-average {view_average!r} is not one of {', '.join(VIEW_AVERAGES)}")


def parse_head(spec: str) -> tuple[int, ...]:
    """``"mlp:512,128"`` → ``(512, 128)``; ``"none"`` → ``()``. A one-line error for anything else."""
    text = str(spec).strip().lower()
    if text == NO_HEAD:
        return ()
    kind, _, widths = text.partition(":")
    try:
        units = tuple(int(w) for w in widths.split(",") if w.strip())
    except ValueError:
        units = ()
    if kind != "mlp" or not units or any(u < 1 or u > 65536 for u in units):
        raise InputError(f"--head {spec!r}: expected 'none' or 'mlp:' followed by layer widths, e.g. mlp:512,128")
    return units


def check_temperature(temperature: Any) -> float:
    """A finite temperature > 0, or a one-line error."""
    if isinstance(temperature, bool) or not isinstance(temperature, Real) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise InputError(f"NT-Xent: temperature {temperature!r} is not a finite number > 0")
    return float(temperature)


def encoder_file(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a file (an encoder .keras or reference .json), else a
    one-line error, so a command refuses a mistyped encoder before loading TensorFlow to read it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: encoder file not found")
    return path
