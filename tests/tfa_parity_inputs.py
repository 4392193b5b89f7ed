"""Deterministic triplet-loss inputs shared by the tfa parity fixture script and the tests.

Pure numpy on purpose: ``scripts/make_tfa_parity_fixture.py`` imports this file by path inside a
throw-away TensorFlow 2.15 + tensorflow-addons environment, and ``tests/test_losses.py`` imports it
under TensorFlow 2.21. Only ``numpy.random.RandomState`` is used (its stream is frozen across numpy
versions), so a fixture needs to store the case parameters and a sha256 of the arrays, not the arrays.
"""
from __future__ import annotations

import hashlib

import numpy as np

LABEL_SCHEMES = ("random", "two_view", "unique")
EMBEDDING_SCHEMES = ("normal", "l2", "grid")


def make_inputs(
    seed: int,
    batch: int,
    dim: int,
    n_classes: int,
    labels: str = "random",
    embeddings: str = "normal",
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(labels int32 (batch,), embeddings (batch, dim) of dtype)`` for one parity case.

    labels: "random" draws from ``n_classes``; "two_view" gives every label exactly twice (our
    pretraining batches: two augmented views per image); "unique" gives no positive pair at all.
    embeddings: "normal" is unnormalised N(0, 1); "l2" is row-wise L2-normalised; "grid" draws
    ``n_classes`` integer vectors in [-2, 2] and repeats them, so rows are duplicated and the
    distances tie exactly (all arithmetic on small integers is exact in float32).
    """
    if labels not in LABEL_SCHEMES or embeddings not in EMBEDDING_SCHEMES:
        raise ValueError(f"unknown scheme labels={labels!r} embeddings={embeddings!r}")
    rs = np.random.RandomState(seed)
    if labels == "random":
        y = rs.randint(0, n_classes, size=batch)
    elif labels == "two_view":
        if batch % 2:
            raise ValueError(f"two_view needs an even batch, got {batch}")
        y = rs.permutation(np.repeat(np.arange(batch // 2), 2))
    else:
        y = rs.permutation(batch)
    if embeddings == "grid":
        prototypes = rs.randint(-2, 3, size=(n_classes, dim)).astype(np.float64)
        x = prototypes[rs.randint(0, n_classes, size=batch)]
    else:
        x = rs.standard_normal((batch, dim))
        if embeddings == "l2":
            x = x / np.sqrt((x * x).sum(axis=1, keepdims=True))
    return y.astype(np.int32), x.astype(dtype)


def inputs_sha256(labels: np.ndarray, embeddings: np.ndarray) -> str:
    """sha256 over shapes, dtypes and little-endian bytes: proves two runs saw identical inputs."""
    digest = hashlib.sha256()
    for array in (labels, embeddings):
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{array.dtype.str.lstrip('<>|=')}{array.shape}".encode())
        digest.update(little.tobytes())
    return digest.hexdigest()
