"""The source and the target site: where the encoder and its colour style come from, which classes match."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...data.colour import RUN_REFERENCE_FILE, ReinhardReference
from ...data.imageio import LazyImages
from ...data.manifest import Manifest, read_csv_rows
from ...errors import InputError


# ------------------------------------------------------------------------------------ source and colour
def resolve_source(source: str | os.PathLike) -> tuple[Path, Path]:
    """``(encoder file, run folder)`` for a pretraining run folder (``RUN/encoder.keras``) or an encoder."""
    source = Path(source)
    encoder = source / "encoder.keras" if source.is_dir() else source
    if not encoder.is_file():
        raise InputError(f"--source {source}: no encoder (expected a pretraining run folder with encoder.keras "
                         "or an encoder .keras file)")
    return encoder, encoder.parent


def source_reference(run_dir: Path, source_images: Manifest | None, sample: int = 500,
                     seed: int = 0) -> tuple[ReinhardReference, str]:
    """The source style: ``RUN/colour_reference.json`` when the run kept it, else computed from the source
    images (a seeded sample). Returns the reference and where it came from."""
    saved = Path(run_dir) / RUN_REFERENCE_FILE
    if saved.is_file():
        return ReinhardReference.from_json(saved), str(saved)
    if source_images is None:
        raise InputError(f"{run_dir}: the source run keeps no {RUN_REFERENCE_FILE}; give --source-images (the "
                         "source training images) to compute it, or --no-colour-transform")
    reference = ReinhardReference.from_images(LazyImages(source_images.absolute()), sample=sample, seed=seed)
    return reference, f"{source_images.source} ({min(sample, len(source_images))} images)"


# ------------------------------------------------------------------------------------ labels and classes
def read_class_map(path: str | os.PathLike) -> dict[str, str]:
    """``target,source`` CSV (header names free, first two columns) → {target class: source class}."""
    header, rows = read_csv_rows(path)
    if len(header) < 2:
        raise InputError(f"{path}: a class map needs two columns (target class, source class)")
    mapping: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        if row[0] in mapping and mapping[row[0]] != row[1]:
            raise InputError(f"{path}:{line}: target class {row[0]!r} is mapped twice")
        mapping[row[0]] = row[1]
    return mapping


def match_classes(target: Sequence[str], source: Sequence[str] | None,
                  mapping: dict[str, str] | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Map target class names to source names: the explicit ``mapping``, else a case-insensitive match
    (BCCD ``Neutrophil`` → PBC ``neutrophil``), else identity when no source classes are known.

    Returns ``(mapping of the usable target classes, {"target_only": [...], "source_only": [...]})``.
    """
    target = sorted(set(target))
    if mapping is None and source is None:
        return {c: c for c in target}, {"target_only": [], "source_only": []}
    if mapping is None:
        lower = {s.lower(): s for s in source}
        mapping = {c: lower[c.lower()] for c in target if c.lower() in lower}
    usable = {t: s for t, s in mapping.items() if t in target and (source is None or s in set(source))}
    missing = {"target_only": [c for c in target if c not in usable],
               "source_only": sorted(set(source or []) - set(usable.values()))}
    return usable, missing


def usable_classes(labels: Sequence[str], min_count: int = 3) -> tuple[np.ndarray, list[str]]:
    """Rows of classes with at least ``min_count`` images (two shots and one test image) and the dropped
    class names; an empty label means unlabelled and is dropped too."""
    counts = Counter(labels)
    dropped = sorted(c for c, n in counts.items() if c and n < min_count)
    keep = np.asarray([bool(v) and counts[v] >= min_count for v in labels])
    return np.flatnonzero(keep), dropped
