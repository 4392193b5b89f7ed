"""Whole image sets through colour normalisation: the Reinhard reference of a sample of images, and
normalised PNG copies (``hemoembed colour-reference`` and ``hemoembed normalize``, callable from Python)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import ProgressFactory, stage
from .colour import ReinhardReference, gray_world, reinhard_normalize
from .manifest import Manifest

METHODS = ("grayworld", "reinhard")


def sample_reference(manifest: Manifest, sample: int = 500, seed: int = 0,
                     progress: ProgressFactory | None = None) -> tuple[ReinhardReference, int]:
    """Reinhard lαβ statistics of ``sample`` images drawn (seeded, without replacement) from ``manifest``;
    returns the reference and how many images it was computed from."""
    from .imageio import load_image

    if int(sample) < 1:
        raise InputError(f"sample of {sample} images: need at least 1")
    rng = np.random.default_rng(seed)
    paths = manifest.absolute()
    chosen = sorted(rng.choice(len(paths), size=min(sample, len(paths)), replace=False))
    images = []
    with stage(progress, len(chosen), "reading") as advance:
        for i in chosen:
            images.append(load_image(paths[i]))
            advance(1)
    return ReinhardReference.from_images(images), len(images)


def check_method(method: str, reference: object) -> None:
    """Refuse an unknown method, or Reinhard without a reference."""
    if method not in METHODS:
        raise InputError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if method == "reinhard" and reference is None:
        raise InputError("--method reinhard needs --reference ref.json (see hemoembed colour-reference)")


def normalised_copies(manifest: Manifest, method: str, out: str | os.PathLike,
                      reference: ReinhardReference | None = None, progress: ProgressFactory | None = None) -> Path:
    """Write a ``method``-normalised PNG copy of every image under ``out`` (same relative paths) and
    ``out/manifest.csv`` (same columns); returns the manifest's path."""
    from .imageio import load_image, save_png

    check_method(method, reference)
    out = Path(out)
    written = []
    with stage(progress, len(manifest), "normalising") as advance:
        for rel, path in zip(manifest.paths, manifest.absolute()):
            image = load_image(path)
            target = (out / rel).with_suffix(".png")
            save_png(reinhard_normalize(image, reference) if method == "reinhard" else gray_world(image), target)
            written.append(target.relative_to(out).as_posix())
            advance(1)
    Manifest(out, written, manifest.columns, str(out)).write_csv(out / "manifest.csv")
    return out / "manifest.csv"
