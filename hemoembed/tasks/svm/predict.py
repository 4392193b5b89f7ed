"""Predicting with saved SVMs: every column's label, its probability, the runner-up and all class probabilities."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...progress import ProgressFactory, stage
from ...store.matrix import StoreRows
from ..common.metrics import top_two
from .meta import check_fingerprint, read_meta


def prediction_table(folders: Sequence[Path], X: np.ndarray | StoreRows, keys: Sequence[str], fingerprint: str,
                     where: str) -> list[list[Any]]:
    """CSV rows (header first): per image and column the label, its probability, the runner-up and all
    class probabilities. Every model is checked against ``fingerprint`` before anything is predicted."""
    for folder in folders:  # every model.json first: a wrong model is refused before scikit-learn loads
        check_fingerprint(read_meta(folder), fingerprint, where)
    from .estimator import load_svm

    loaded = [load_svm(folder, fingerprint, where) for folder in folders]
    header: list[Any] = ["path"]
    blocks = []
    for model, meta in loaded:
        col = meta["column"]
        proba = model.predict_proba(X)
        first, second = top_two(proba, model.classes_)
        header += [col, f"{col}_probability", f"{col}_second"] + [f"{col}_p_{c}" for c in model.classes_]
        blocks.append((first, proba.max(axis=1), second, proba))
    rows = [header]
    for i, key in enumerate(keys):
        row: list[Any] = [key]
        for first, top, second, proba in blocks:
            row += [first[i], float(top[i]), second[i]] + [float(p) for p in proba[i]]
        rows.append(row)
    return rows


@dataclass
class PredictConfig:
    """What one ``hemoembed predict`` reads: saved SVMs and either a store or an encoder with images."""

    model: str = ""
    store: str = ""
    encoder: str = ""
    images: str = ""
    image_root: str = ""
    allow_outside_root: bool = False
    batch_size: int = 64


@dataclass
class Predictions:
    """What :func:`run_predict` did: rows predicted, columns, and images that could not be decoded."""

    n_images: int
    n_columns: int
    skipped: list[str] = field(default_factory=list)


def run_predict(config: PredictConfig, out: str | os.PathLike, *,
                progress: ProgressFactory | None = None) -> Predictions:
    """Write the predictions CSV ``out`` (see :func:`prediction_table`); every model is checked against the
    store's or the encoder's fingerprint first."""
    from ...config import atomic_write_text, csv_text
    from .meta import model_folders

    if bool(config.store) == bool(config.encoder):
        raise InputError("give exactly one of --store STORE or --encoder ENCODER IMAGES")
    folders = model_folders(config.model)
    skipped: list[str] = []
    if config.store:
        from ...store.store import EmbeddingStore

        if config.images:
            raise InputError(f"{config.images}: IMAGES goes with --encoder; with --store every stored image is "
                             "predicted")
        opened = EmbeddingStore.open(config.store)  # its rows are read part by part, never as one matrix
        X = StoreRows(opened, np.arange(len(opened)))
        keys, fp, where = opened.paths, opened.fingerprint, f"store {config.store}"
    else:
        X, keys, fp, where, skipped = embed_for_predict(config, read_meta(folders[0]), progress)
    rows = prediction_table(folders, X, keys, fp, where)
    atomic_write_text(Path(out), csv_text(rows))
    return Predictions(len(rows) - 1, len(folders), skipped)


def embed_for_predict(config: PredictConfig, meta: dict, progress: ProgressFactory | None = None):
    """Embed the images with the encoder after checking it is the one the models were trained on:
    (embeddings, keys, fingerprint, where, paths that could not be decoded)."""
    from ...data.manifest import load_manifest
    from ...model.encoder import fingerprint, load_encoder
    from ...store.embed import embed_images

    if not config.images:
        raise InputError("--encoder needs IMAGES (a folder or CSV manifest) to embed")
    manifest = load_manifest(config.images, config.image_root or None, config.allow_outside_root)
    model, record = load_encoder(config.encoder)
    fp = fingerprint(model)
    check_fingerprint(meta, fp, f"encoder {config.encoder}")
    with stage(progress, len(manifest), "embedding") as advance:
        X, ok = embed_images(model, record, manifest.absolute(), config.batch_size, progress=advance)
    missing = sorted(set(range(len(manifest))) - set(ok.tolist()))
    if not len(ok):
        from ...data.imageio import probe

        reason = probe(manifest.absolute()[0]).error or "cannot decode image"
        raise InputError(f"{manifest.absolute()[0]}: {reason} (none of the {len(manifest)} image(s) could be used)")
    return (X, [manifest.paths[i] for i in ok], fp, f"encoder {config.encoder}",
            [manifest.paths[i] for i in missing])
