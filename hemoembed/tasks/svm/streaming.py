"""Hinge-loss SGD streamed over row blocks: ``solver="sgd"`` fits a million rows without a copy of them.

:class:`.estimator.EmbeddingSVM` fits ``sgd`` here, on an array or on a store's rows
(:class:`~hemoembed.store.matrix.StoreRows`, read one part at a time), in three streamed steps:

1. ``StandardScaler.partial_fit`` over every block (the mean and scale of fitting it at once).
2. ``SGD_PASSES`` passes of ``SGDClassifier.partial_fit`` (hinge loss, ``alpha = 1 / (C · n)``, the "optimal"
   learning-rate schedule continuing across blocks), blocks in a seeded random order each pass, rows shuffled
   within a block by SGD; each block is standardised on the way (float32 in, as the in-memory path fed it).
3. Sigmoid calibration by scikit-learn's recipe for an already fitted classifier (``FrozenEstimator``): on a
   stratified held-out ``1 / calibration_folds`` of the rows (at most ``CALIBRATION_ROWS``, the only rows held
   in memory), which the SVM does not train on. The liblinear and libsvm paths instead fit K fold SVMs for
   out-of-fold scores and then one on all rows (K + 1 fits); here one fit on the other rows, at 1/(K + 1) of
   the CPU, and the sigmoids (two numbers per class) still see thousands of unseen rows. With a class smaller
   than ``CV_CALIBRATION_MIN`` the sigmoids are fitted on (a sample of) the training rows, as there.

Peak memory beyond the model: one part or block, and the calibration rows (≤ 50,000 × 1280 float32 =
256 MB), however many rows there are.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...store.matrix import StoreRows, as_embeddings, row_groups

SGD_PASSES = 10  # passes over the rows; fixed, so the cost is known in advance (macro-F1 on PBC: RESULTS.md)
CALIBRATION_ROWS = 50_000  # at most this many rows fit the sigmoids (and are read into memory at once)


def calibrate_frozen(svm, X: np.ndarray, y: np.ndarray):
    """Sigmoid calibration of an already fitted SVM on ``(X, y)`` (standardised rows); the SVM is not refit."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    every = np.arange(len(y))
    return CalibratedClassifierCV(FrozenEstimator(svm), method="sigmoid", cv=[(every, every)]).fit(X, y)


def calibration_rows(y: np.ndarray, folds: int, held_out: bool, seed: int) -> np.ndarray:
    """Sorted rows that fit the sigmoids: a stratified ``1 / folds`` of the rows held out of training (at most
    ``CALIBRATION_ROWS``), or, when not ``held_out``, a sample of the rows (all of them when few)."""
    from sklearn.model_selection import train_test_split

    every = np.arange(len(y))
    if not held_out:
        if len(y) <= CALIBRATION_ROWS:
            return every
        return np.sort(np.random.default_rng(seed).choice(every, CALIBRATION_ROWS, replace=False))
    size = min(len(y) // max(folds, 2), CALIBRATION_ROWS)
    return np.sort(train_test_split(every, test_size=size, stratify=y, random_state=seed)[1])


def fit_streamed(base: Callable[[int], Any], X: np.ndarray | StoreRows, y: np.ndarray, *, folds: int,
                 held_out: bool, seed: int, passes: int = SGD_PASSES):
    """Scaler + SGD SVM + sigmoid calibration as a ``Pipeline``, streamed over ``X``'s row blocks (see the
    module docstring). ``base(n)`` is the unfitted SGD classifier for ``n`` training rows."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler()
    for _, block in row_groups(X):
        scale.partial_fit(block)
    calibration = calibration_rows(y, folds, held_out, seed)
    train = np.ones(len(y), bool)
    if held_out:
        train[calibration] = False
    svm, classes, rng = base(int(train.sum())), np.unique(y), np.random.default_rng(seed)
    for _ in range(passes):
        for positions, block in row_groups(X, rng):
            mine = train[positions]
            if mine.any():
                svm.partial_fit(scale.transform(block[mine]), y[positions[mine]], classes=classes)
    scaled = scale.transform(as_embeddings(X[calibration]))
    return Pipeline([("scale", scale), ("svm", calibrate_frozen(svm, scaled, y[calibration]))])
