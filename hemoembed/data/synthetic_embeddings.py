"""Synthetic embeddings with the structure of a real one: tight class cores and a hard, overlapping fringe.

For tests, benchmarks and the README's Python API example: no encoder or images needed.
"""
from __future__ import annotations

import numpy as np


def structured_embeddings(n: int, dim: int = 64, n_classes: int = 5, seed: int = 0,
                          hard_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised synthetic embeddings with easy class cores and a hard, overlapping fringe.

    Most points sit tight around their class centre; a ``hard_fraction`` lies between two classes. This is
    the structure where informative sampling pays off (and what a real embedding looks like).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = rng.integers(0, n_classes, size=n)
    X = centres[labels] + 0.35 * rng.normal(size=(n, dim))
    hard = rng.random(n) < hard_fraction
    other = (labels + rng.integers(1, n_classes, size=n)) % n_classes
    mix = rng.uniform(0.3, 0.5, size=(n, 1))
    X[hard] = ((1 - mix) * centres[labels] + mix * centres[other])[hard] + 0.3 * rng.normal(size=(int(hard.sum()), dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    names = np.array([f"class{i}" for i in range(n_classes)])
    return X.astype(np.float32), names[labels]
