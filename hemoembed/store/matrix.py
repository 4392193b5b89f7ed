"""Embedding matrices handed to the store's readers and the tasks: checked once at the boundary (2-d,
non-empty, finite) and walked in row blocks, so a million float16 rows never need a float32 copy of all."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import InputError


def as_embeddings(X, what: str = "embeddings") -> np.ndarray:
    """``X`` as a float32 (N, D) matrix, refusing an empty or non-2-d array and NaN or infinite values."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise InputError(f"{what}: expected a non-empty (N, D) matrix, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError(f"{what}: contains NaN or infinite values")
    return X


BLOCK_ROWS = 65536  # rows converted, standardised or predicted at a time by row_blocks' users


def row_blocks(X: np.ndarray, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, float32 block)`` of a matrix (e.g. a float16 store's), each block checked like
    :func:`as_embeddings` (2-d, non-empty, finite): work on a million rows without a float32 copy of all."""
    X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        as_embeddings(X)  # the one-line error
    for start in range(0, len(X), rows):
        yield start, as_embeddings(X[start:start + rows])
