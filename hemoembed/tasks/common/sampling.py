"""Class-balanced sampling: few-shot sets and nested support sets.

Support sets are nested (the 5-per-class set contains the 2-per-class set) because each repeat draws one
permutation per class and takes its first ``k`` images.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import InputError

ALL = "all"


def nested_support_sets(labels: Sequence[str], sizes: Sequence[int | str], *,
                        seed: int = 0) -> dict[int | str, np.ndarray]:
    """For each size, indices of ``k`` images per class (all of a smaller class); nested across sizes."""
    y = np.asarray([str(v) for v in labels])
    rng = np.random.default_rng(seed)
    orders = {c: rng.permutation(np.flatnonzero(y == c)) for c in sorted(set(y))}
    out: dict[int | str, np.ndarray] = {}
    for size in sizes:
        chosen = [order if size == ALL else order[: int(size)] for order in orders.values()]
        out[size] = np.sort(np.concatenate(chosen))
    return out


def select_shots(labels: Sequence[str], shots: int, min_per_class: int = 2, seed: int = 0,
                 keep_test: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced shots: ``(shot indices, test indices)``, disjoint, both sorted.

    Every class gets at least ``min_per_class`` (capped so ``keep_test`` of its images stay for testing),
    then single shots go to the class with the fewest until ``shots`` are used or every class is capped.
    """
    y = np.asarray([str(v) for v in labels])
    classes = sorted(set(y))
    caps = {c: max(0, int((y == c).sum()) - keep_test) for c in classes}
    count = {c: min(int(min_per_class), caps[c]) for c in classes}
    if sum(count.values()) > shots:
        raise InputError(f"--shots {shots} is fewer than --min-per-class {min_per_class} × {len(classes)} classes")
    rng = np.random.default_rng([int(seed), 31])
    order = list(rng.permutation(classes))
    while sum(count.values()) < shots:
        open_ = [c for c in order if count[c] < caps[c]]
        if not open_:
            break
        count[min(open_, key=lambda c: count[c])] += 1
    chosen = [rng.permutation(np.flatnonzero(y == c))[:count[c]] for c in classes]
    shot_idx = np.sort(np.concatenate(chosen)).astype(np.int64)
    return shot_idx, np.setdiff1d(np.arange(len(y)), shot_idx)
