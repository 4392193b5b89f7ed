"""Exact k-nearest-neighbour search over a stored embedding matrix, in bounded memory.

The distance matrix is never formed whole: queries and stored rows are processed in blocks whose
(queries × rows) float32 distances fit in ``block_bytes``, keeping a running best-k per query. Cosine
distance is ``1 - cos``; euclidean is the L2 distance. Ties are broken by the smaller row index.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

METRICS = ("cosine", "euclidean")
DEFAULT_BLOCK_BYTES = 64 * 2**20


def knn(queries: np.ndarray, base: np.ndarray, k: int, metric: str = "cosine",
        exclude: Sequence[int] | np.ndarray | None = None,
        block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``base`` for each query: (indices (Q, k) int64, distances (Q, k) float32).

    ``k`` is capped at the number of candidate rows. ``exclude[q]`` (or -1) is a base row never returned for
    query ``q`` (a stored query's own row).
    """
    if metric not in METRICS:
        raise InputError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    base = np.asarray(base, dtype=np.float32)
    if base.ndim != 2 or queries.shape[1] != base.shape[1]:
        raise InputError(f"queries of shape {queries.shape} and stored embeddings of shape {base.shape} do not match")
    if int(k) < 1:
        raise InputError(f"k must be at least 1, got {k}")
    n_q, n_b = len(queries), len(base)
    excl = np.full(n_q, -1, np.int64) if exclude is None else np.asarray(exclude, np.int64).reshape(-1)
    if len(excl) != n_q:
        raise InputError(f"exclude has {len(excl)} entries for {n_q} queries")
    k = int(min(k, n_b - (1 if (excl >= 0).any() else 0)))
    if k < 1 or n_q == 0:
        return np.zeros((n_q, 0), np.int64), np.zeros((n_q, 0), np.float32)

    q_prep, q_sq = _prepare(queries, metric)
    b_prep, b_sq = _prepare(base, metric)
    q_block = min(n_q, 1024)
    b_block = max(k, min(n_b, block_bytes // (12 * q_block)))  # float32 distances + int64 argpartition
    out_idx = np.empty((n_q, k), np.int64)
    out_dist = np.empty((n_q, k), np.float32)
    for q0 in range(0, n_q, q_block):
        q1 = min(n_q, q0 + q_block)
        best_d = np.full((q1 - q0, k), np.inf, np.float32)
        best_i = np.full((q1 - q0, k), np.iinfo(np.int64).max, np.int64)
        for b0 in range(0, n_b, b_block):
            b1 = min(n_b, b0 + b_block)
            dist = _distances(q_prep[q0:q1], q_sq[q0:q1], b_prep[b0:b1], b_sq[b0:b1], metric)
            local = excl[q0:q1] - b0
            hit = (local >= 0) & (local < b1 - b0)
            dist[np.nonzero(hit)[0], local[hit]] = np.inf
            take = min(k, b1 - b0)
            cand = np.argpartition(dist, take - 1, axis=1)[:, :take] if take < b1 - b0 else \
                np.broadcast_to(np.arange(b1 - b0), dist.shape)
            cand_d = np.take_along_axis(dist, cand, axis=1)
            best_d, best_i = _merge(best_d, best_i, cand_d, cand + b0, k)
        out_idx[q0:q1], out_dist[q0:q1] = best_i, best_d
    return out_idx, out_dist


def _prepare(x: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows for cosine (zero rows stay zero); squared norms for euclidean."""
    if metric == "cosine":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0), np.zeros(len(x), np.float32)
    return x, np.einsum("ij,ij->i", x, x)


def _distances(q: np.ndarray, q_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray, metric: str) -> np.ndarray:
    dot = q @ b.T
    if metric == "cosine":
        return np.subtract(1.0, dot, out=dot)
    dot *= -2.0
    dot += q_sq[:, None]
    dot += b_sq[None, :]
    np.maximum(dot, 0.0, out=dot)
    return np.sqrt(dot, out=dot)


def _merge(best_d: np.ndarray, best_i: np.ndarray, cand_d: np.ndarray, cand_i: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k smallest of the running best and the new candidates, ordered by (distance, index)."""
    all_d = np.concatenate([best_d, cand_d], axis=1)
    all_i = np.concatenate([best_i, cand_i], axis=1)
    order = np.lexsort((all_i, all_d), axis=1)[:, :k]
    return np.take_along_axis(all_d, order, axis=1), np.take_along_axis(all_i, order, axis=1)
