"""Class-balanced sampling, one way everywhere: a random order per class (classes sorted, drawn in turn from
one generator), then the first ``k`` of each. Few-shot sets, nested support sets and per-class subsets all
draw through :func:`class_permutations`.

Support sets are nested (the 5-per-class set contains the 2-per-class set) because each repeat draws one
permutation per class and takes its first ``k`` images.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ...errors import InputError

ALL = "all"


def class_permutations(labels: Sequence[str], rng: np.random.Generator,
                       classes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per class (sorted; only ``classes`` when given), its row indices in an order drawn from ``rng``."""
    y = np.asarray([str(v) for v in labels])
    return {c: rng.permutation(np.flatnonzero(y == c)) for c in sorted(set(y) if classes is None else classes)}


def per_class_sample(labels: Sequence[str], per_class: int | Mapping[str, int], rng: np.random.Generator,
                     classes: Sequence[str] | None = None) -> np.ndarray:
    """Row indices of up to ``per_class`` images of each class (a number, or one per class), class after
    class in sorted order; a smaller class gives all it has."""
    orders = class_permutations(labels, rng, classes)
    counts = per_class if isinstance(per_class, Mapping) else dict.fromkeys(orders, per_class)
    chosen = [order[: int(counts[c])] for c, order in orders.items()]
    return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, np.int64)


def nested_support_sets(labels: Sequence[str], sizes: Sequence[int | str], *,
                        seed: int = 0) -> dict[int | str, np.ndarray]:
    """For each size, indices of ``k`` images per class (all of a smaller class); nested across sizes."""
    orders = class_permutations(labels, np.random.default_rng(seed))
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
    shot_idx = np.sort(per_class_sample(y, count, rng))
    return shot_idx, np.setdiff1d(np.arange(len(y)), shot_idx)
