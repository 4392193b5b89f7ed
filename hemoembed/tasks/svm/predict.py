"""Predicting with saved SVMs: every column's label, its probability, the runner-up and all class probabilities."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..common.metrics import top_two
from .estimator import load_svm


def prediction_table(folders: Sequence[Path], X: np.ndarray, keys: Sequence[str], fingerprint: str,
                     where: str) -> list[list[Any]]:
    """CSV rows (header first): per image and column the label, its probability, the runner-up and all
    class probabilities. Every model is checked against ``fingerprint`` before anything is predicted."""
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
