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


class StoreRows:
    """Some rows of a store as a lazy (N, D) float32 matrix: indexing selects rows without reading any, and
    :func:`row_groups` reads them one part at a time (``np.asarray`` reads them all, for small selections).
    What ``fit-svm --solver sgd`` and ``predict`` hand around instead of a million-row matrix."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, store, rows) -> None:
        self.store = store
        self.rows = np.asarray(rows, np.int64).reshape(-1)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.store.dim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> StoreRows:
        return StoreRows(self.store, self.rows[idx])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        X = self.store.rows_embeddings(self.rows)
        return X if dtype is None else X.astype(dtype, copy=False)


def row_groups(X, rng: np.random.Generator | None = None,
               rows: int = BLOCK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, float32 block)`` covering every row of ``X`` once: a :class:`StoreRows` part by part, an
    array in blocks of ``rows``; blocks in a random order drawn from ``rng`` when given. Each block is checked
    like :func:`as_embeddings`."""
    if isinstance(X, StoreRows):
        if not len(X):
            as_embeddings(np.zeros((0, X.shape[1])))  # the one-line error
        for positions, block in X.store.iter_rows(X.rows, rng):
            yield positions, as_embeddings(block)
        return
    X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        as_embeddings(X)  # the one-line error
    starts = np.arange(0, len(X), rows)
    for start in starts if rng is None else rng.permutation(starts):
        yield np.arange(start, min(start + rows, len(X))), as_embeddings(X[start:start + rows])
