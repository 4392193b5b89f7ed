"""Shared test builders (importable from every test folder: ``tests/`` is on pytest's ``pythonpath``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SIZE = 32  # adapter tests' encoder input side: tiny for speed on 2 shared cores


def write_store(directory: Path, X: np.ndarray, labels: np.ndarray, fingerprint: str = "f" * 64):
    """A real on-disk embedding store holding ``X`` (paths ``<label>/img_<i>.png``, column ``label``)."""
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.store.store import EmbeddingStore, make_part_table

    store = EmbeddingStore.create(directory, fingerprint, PreprocessingRecord(image_size=32), X.shape[1])
    paths = [f"{c}/img_{i:04d}.png" for i, c in enumerate(labels)]
    store.append(make_part_table(paths, ["0" * 64] * len(paths), [32] * len(paths), [32] * len(paths), X,
                                 {"label": list(labels)}))
    return EmbeddingStore.open(directory)


def make_sites(root: Path, n_per_class: int = 8, size: int = 48) -> dict[str, Path]:
    """Synthetic cells of 3 sites, one CSV manifest per site (``site0`` is the source) and a source encoder."""
    import keras

    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.data.synthetic import make_synthetic_dataset
    from hemoembed.model.encoder import build_encoder, save_encoder

    cells = root / "cells"
    manifest = load_manifest(make_synthetic_dataset(cells, n_per_class=n_per_class, sites=3, size=size, seed=0))
    out = {}
    for s in range(3):
        rows = [i for i, v in enumerate(manifest.column("site")) if v == f"site{s}"]
        manifest.subset(rows).write_csv(cells / f"site{s}.csv")
        out[f"site{s}"] = cells / f"site{s}.csv"
    keras.utils.set_random_seed(0)
    run = root / "run"
    save_encoder(build_encoder(PreprocessingRecord(SIZE, 0.875, "grayworld"), "none"), run / "encoder.keras")
    out["run"] = run
    return out
