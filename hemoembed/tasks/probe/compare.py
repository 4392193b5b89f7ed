"""Is an embedding worth having? The same linear SVM on it and on its baselines, over the same held-out splits.

A learned embedding only helps if a linear classifier on it beats the same classifier on (a) the raw pixels
and (b) the embedding of an untrained encoder of the same architecture; both beat (c) chance. This module
scores any set of representations of the same labelled images that way (arrays in, numbers out).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import InputError
from ..common.labels import check_trainable
from ..common.metrics import chance, macro_f1


def probe_splits(labels: Sequence[str], repeats: int, test_fraction: float,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``repeats`` stratified (train, test) splits, the same for every representation."""
    from sklearn.model_selection import StratifiedShuffleSplit

    if repeats < 1 or not 0.0 < test_fraction < 1.0:
        raise InputError(f"--repeats {repeats} must be ≥ 1 and --test-fraction {test_fraction} within (0, 1)")
    y = np.asarray(labels, dtype=str)
    check_trainable(y, "label", min_per_class=2)
    try:
        splitter = StratifiedShuffleSplit(n_splits=repeats, test_size=test_fraction, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y))
    except ValueError as exc:
        raise InputError(f"cannot split {len(y)} labelled images with --test-fraction {test_fraction}: {exc}") from None


def linear_probe(representations: Mapping[str, np.ndarray], labels: Sequence[str], *, repeats: int = 5,
                 test_fraction: float = 0.25, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Test accuracy and macro-F1 (mean and sd over the splits) of the product's linear SVM (``fit-svm``'s
    :class:`~hemoembed.tasks.svm.EmbeddingSVM`) on each representation, plus ``chance``."""
    from ..svm.estimator import EmbeddingSVM

    y = np.asarray(labels, dtype=str)
    splits = probe_splits(y, repeats, test_fraction, seed)
    classes = sorted(set(y))
    out: dict[str, dict[str, Any]] = {}
    for name, X in representations.items():
        X = np.asarray(X, np.float32)
        if len(X) != len(y):
            raise InputError(f"{name}: {len(X)} rows for {len(y)} labels")
        accuracy, f1 = [], []
        for train, test in splits:
            pred = EmbeddingSVM(random_state=seed).fit(X[train], y[train]).predict(X[test])
            accuracy.append(float(np.mean(pred == y[test])))
            f1.append(macro_f1(y[test], pred, classes))
        out[name] = {"accuracy_mean": float(np.mean(accuracy)), "accuracy_sd": float(np.std(accuracy)),
                     "macro_f1_mean": float(np.mean(f1)), "macro_f1_sd": float(np.std(f1)),
                     "accuracy": accuracy, "macro_f1": f1}
    guess = chance(y[np.concatenate([test for _, test in splits])])
    out["chance"] = {"accuracy_mean": guess["accuracy"], "accuracy_sd": 0.0, "macro_f1_mean": guess["macro_f1"],
                     "macro_f1_sd": 0.0}
    return out
