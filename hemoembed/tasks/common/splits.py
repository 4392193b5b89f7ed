"""Who trains on what: test splits and cross-validation folds.

Test rows are chosen first and never seen again until the final evaluation; folds and support sets are
drawn from the training rows only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import InputError


def stratified_test_split(labels: Sequence[str], fraction: float, *, seed: int = 0,
                          groups: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): stratified by label, and by group when ``groups`` is given."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    if not 0.0 < fraction < 1.0:
        raise InputError(f"--test-fraction {fraction} must be between 0 and 1")
    y = np.asarray([str(v) for v in labels])
    if groups is None:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        train, test = next(splitter.split(np.zeros(len(y)), y))
    else:
        n_splits = max(2, round(1.0 / fraction))
        if len(set(groups)) < n_splits:
            raise InputError(f"--group-column: {len(set(groups))} groups cannot give a {fraction:g} test "
                             f"fraction (need at least {n_splits})")
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train, test = next(splitter.split(np.zeros(len(y)), y, np.asarray(groups)))
    return np.sort(train), np.sort(test)


def cv_splits(labels: Sequence[str], n_folds: int, *, seed: int = 0, groups: Sequence[str] | None = None,
              rare_classes: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (group-aware) folds; fewer (or none) when the smallest class or the groups are too few.

    By default every training fold keeps ≥ 2 images of each class (what the SVM's calibration needs), so a
    class with 2 images means no CV at all. ``rare_classes``: keep ``n_folds`` and spread a small class over
    as many validation folds as it has images; every training fold still holds ≥ 1 image of each class with
    ≥ 2 (for fine-tuning, which needs no per-class calibration; BCCD's 2-shot basophils).
    """
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray([str(v) for v in labels])
    smallest = int(min(np.unique(y, return_counts=True)[1]))
    n = min(int(n_folds), len(y) // 2) if rare_classes and smallest >= 2 else min(int(n_folds), smallest // 2)
    if groups is not None:
        n = min(n, len(set(groups)))
    if n < 2:
        return []
    if groups is None:
        with warnings.catch_warnings():  # sklearn warns when a class has fewer members than folds: intended here
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            return list(StratifiedKFold(n, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    return list(StratifiedGroupKFold(n, shuffle=True, random_state=seed).split(np.zeros(len(y)), y,
                                                                                 np.asarray(groups)))




def refuse_overlap(train_keys: Sequence[str], test_keys: Sequence[str], test_source: str, key: str = "path") -> None:
    """Refuse a test set that shares any image (``key`` value) with the training data."""
    overlap = set(test_keys) & set(train_keys)
    if overlap:
        raise InputError(f"{test_source}: {len(overlap)} {key} value(s) are also in the training labels, "
                         f"e.g. {min(overlap)} (test images must never be trained on)")
