"""The paper's linear SVM for active learning, refitted on a growing labelled set at a fraction of the cost.

What makes a 16,000-image, 1280-d study with ~180 refits per curve practical on a laptop CPU is
:class:`IncrementalLinearSVM`: the same libsvm linear SVM, but on a Gram matrix grown by the new rows only,
scored on the pool through folded weight vectors, without Platt's five extra fits, and with features
standardised once on the whole (unlabelled) pool instead of refitting a scaler every step.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin

from ...errors import InputError

GRAM_GROWTH = 1.2  # the Gram buffer holds (1.2 n)^2 values: a few reallocations over a whole curve
# Rows of the Gram matrix per product. numpy computes a whole X @ X.T with BLAS syrk, which segfaults in the
# multi-threaded OpenBLAS 0.3.31 shipped with numpy for 16,000 x 1280 and more (float64, 2 threads);
# row blocks go through gemm, which does not.
GRAM_BLOCK = 2048
# Rows scored (or standardised) at a time: the float64 copy of one block (84 MB at 1280-d), never of a
# 100,000-row pool (1 GB) per query.
SCORE_ROWS = 8192


class IncrementalLinearSVM(ClassifierMixin, BaseEstimator):
    """The paper's ``SVC(kernel="linear")``, refitted on a growing labelled set at a fraction of the cost.

    libsvm spends its time on kernel evaluations (``n_SV × n × d`` per pass); here the Gram matrix of the
    labelled rows is kept between fits and only the rows of newly added samples are computed, so libsvm
    runs on ``kernel="precomputed"`` and solves the *same* problem (same C, tolerance, predictions). The
    dual solution is then folded into one weight vector per class pair so scoring a 16,000-image pool is
    one matrix product instead of ``n_SV × n_pool`` kernel evaluations. Probabilities couple the pairwise
    sigmoids, ``p_k ∝ exp(Σ_j log σ(2 f_kj))``, instead of Platt's five-fold calibration: a smooth,
    monotone map of the pairwise margins, which is what uncertainty, margin and entropy sampling rank by.
    ``classes`` fixes the columns of :meth:`predict_proba` while classes are still missing from the labels.
    """

    def __init__(self, classes: Sequence[str] | None = None, C: float = 1.0, tol: float = 1e-3) -> None:
        self.classes = classes
        self.C = C
        self.tol = tol

    def fit(self, X: np.ndarray, y: Sequence) -> IncrementalLinearSVM:
        """Fit on ``X``; when ``X`` extends the rows of the previous fit only the new Gram rows are computed."""
        from sklearn.svm import SVC

        X = np.ascontiguousarray(X, dtype=np.float64)
        if not np.isfinite(X).all():
            raise InputError("embeddings contain NaN or infinite values")
        y = np.asarray(y).astype(str)
        self.classes_ = np.asarray(sorted(set(map(str, self.classes))) if self.classes is not None else np.unique(y))
        unknown = sorted(set(y.tolist()) - set(self.classes_.tolist()))
        if unknown:
            raise InputError(f"label(s) {', '.join(unknown[:5])} not among the classes {', '.join(self.classes_)}")
        self._gram = self._grown_gram(X)
        self._X = X
        present = np.unique(y)
        self._absent = ~np.isin(self.classes_, present)  # never predicted until labelled once
        if len(present) < 2:  # libsvm needs two classes: score every row as the one class seen so far
            self.pair_coef_, self.pair_intercept_, self.pairs_ = np.zeros((0, X.shape[1])), np.zeros(0), []
            self._only = present[0]
            return self
        self._only = None
        with config_context(assume_finite=True):  # X was checked above; skip re-scanning the n x n Gram
            svc = SVC(kernel="precomputed", C=self.C, tol=self.tol).fit(self._gram, y)
        pairs, self.pair_coef_, self.pair_intercept_ = _fold_pairs(svc, X)
        position = {c: i for i, c in enumerate(self.classes_.tolist())}
        named = [position[str(c)] for c in svc.classes_]
        self.pairs_ = [(named[a], named[b]) for a, b in pairs]
        self.n_support_ = int(svc.n_support_.sum())
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The fitted model as plain arrays (for ``np.savez``: no pickle)."""
        pairs = np.asarray(self.pairs_, dtype=np.int64).reshape(-1, 2)
        return {"classes": self.classes_.astype(str), "pairs": pairs, "pair_coef": self.pair_coef_,
                "pair_intercept": self.pair_intercept_, "absent": self._absent,
                "only": np.asarray("" if self._only is None else str(self._only))}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], C: float = 1.0) -> IncrementalLinearSVM:
        """Rebuild a fitted model from :meth:`state` (predicts; a new ``fit`` starts a fresh Gram)."""
        model = cls(classes=[str(c) for c in state["classes"]], C=C)
        model.classes_ = np.asarray(state["classes"]).astype(str)
        model.pairs_ = [(int(a), int(b)) for a, b in np.asarray(state["pairs"])]
        model.pair_coef_ = np.asarray(state["pair_coef"], dtype=np.float64)
        model.pair_intercept_ = np.asarray(state["pair_intercept"], dtype=np.float64)
        model._absent = np.asarray(state["absent"], dtype=bool)
        model._only = str(state["only"]) or None
        return model

    def _grown_gram(self, X: np.ndarray) -> np.ndarray:
        """The Gram matrix of ``X``, C-contiguous in a reused flat buffer (libsvm reads it without a copy).

        When ``X`` extends the previous rows, the old block is moved in place to its wider row stride and
        only the new rows are multiplied: no fresh 2 GB allocation (page faults) per step at a 16,000 pool.
        """
        old = getattr(self, "_X", None)
        n, n_old = len(X), 0 if old is None else len(old)
        grows = (old is not None and n >= n_old and old.shape[1] == X.shape[1]
                 and np.array_equal(X[:n_old], old))
        buffer = getattr(self, "_buffer", None)
        if buffer is None or len(buffer) < n * n:
            fresh = np.empty(int((GRAM_GROWTH * n) ** 2))
            if grows:
                fresh[: n_old * n_old] = buffer[: n_old * n_old]
            buffer = self._buffer = fresh
        gram = buffer[: n * n].reshape(n, n)
        if not grows:
            for start in range(0, n, GRAM_BLOCK):  # blocks: one X @ X.T (BLAS syrk) crashes OpenBLAS at n ≳ 16,000
                np.matmul(X[start:start + GRAM_BLOCK], X.T, out=gram[start:start + GRAM_BLOCK])
            return gram
        previous = buffer[: n_old * n_old].reshape(n_old, n_old)
        for i in range(n_old - 1, 0, -1):  # last row first: a row's destination never overlaps rows still to move
            gram[i, :n_old] = previous[i]
        gram[n_old:] = X[n_old:] @ X.T
        gram[:n_old, n_old:] = gram[n_old:, :n_old].T
        return gram

    def pairwise_decision(self, X: np.ndarray) -> np.ndarray:
        """Margins of every class pair (i, j), positive for class i: (N, n_pairs). ``X`` is read ``SCORE_ROWS``
        rows at a time (any row-sliceable matrix), each block in float64."""
        margins = np.empty((len(X), len(self.pair_intercept_)))
        for start in range(0, len(X), SCORE_ROWS):
            block = np.asarray(X[start:start + SCORE_ROWS], dtype=np.float64)
            margins[start:start + len(block)] = block @ self.pair_coef_.T + self.pair_intercept_
        return margins

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        k = len(self.classes_)
        logits = np.zeros((len(X), k))
        if self._only is not None:
            logits[:, list(self.classes_).index(self._only)] = 1.0
        else:
            margins = self.pairwise_decision(X)
            for p, (i, j) in enumerate(self.pairs_):
                logits[:, i] += -np.logaddexp(0.0, -2.0 * margins[:, p])
                logits[:, j] += -np.logaddexp(0.0, 2.0 * margins[:, p])
        logits[:, self._absent] = -np.inf
        logits -=  logits.max(axis=1, keepdims=True)
        expo = np.exp(logits)
        return expo / expo.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """libsvm's one-vs-one vote (ties to the first class): the predictions of ``SVC.predict``."""
        if self._only is not None:
            return np.full(len(X), self._only)
        votes = np.zeros((len(X), len(self.classes_)), dtype=np.int64)
        margins = self.pairwise_decision(X)
        for p, (i, j) in enumerate(self.pairs_):
            votes[:, i] += margins[:, p] > 0
            votes[:, j] += margins[:, p] <= 0
        return self.classes_[np.argmax(votes, axis=1)]


def _fold_pairs(svc, X: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """One weight vector per libsvm class pair (indices into the estimator's ``classes_``)."""
    classes = [str(c) for c in svc.classes_]
    starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
    sv = X[svc.support_]
    pairs, coefs = [], []
    for a in range(len(classes)):
        for b in range(a + 1, len(classes)):
            ia, ib = slice(starts[a], starts[a + 1]), slice(starts[b], starts[b + 1])
            coefs.append(svc.dual_coef_[b - 1, ia] @ sv[ia] + svc.dual_coef_[a, ib] @ sv[ib])
            pairs.append((a, b))
    return pairs, np.asarray(coefs), np.asarray(svc.intercept_, dtype=np.float64)


class PoolRows:
    """Rows ``rows`` of the pool matrix ``X``, not copied: the strategies score them through
    :class:`IncrementalLinearSVM` a block at a time (slicing reads a block), instead of a copy of
    the unlabelled pool (512 MB at 100,000 rows) per query; ``np.asarray`` copies them for other estimators."""

    def __init__(self, X: np.ndarray, rows: np.ndarray) -> None:
        self.X, self.rows = X, rows

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.X.shape[1]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        return self.X[self.rows[index]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self.X[self.rows], dtype=dtype)


def pool_standardiser(X: np.ndarray | Callable[[], Iterable[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of every feature over the whole (unlabelled) pool: known before any label. ``X`` is the
    matrix, or a function giving its rows in order as blocks of any size (called twice: the mean, then the
    scale), so a pool kept in several parts (the review app's) is never concatenated. Sums in float64, row
    after row, ``SCORE_ROWS`` rows at a time (``np.std`` would hold a float64 copy of the whole pool): the same
    bytes from the matrix and from any blocks of it."""
    blocks = X if callable(X) else lambda: (X[start:start + SCORE_ROWS] for start in range(0, len(X), SCORE_ROWS))
    total, count = _row_sum(row_blocks(blocks(), SCORE_ROWS))
    mean = total / count
    squares = np.zeros(len(mean))
    for block in row_blocks(blocks(), SCORE_ROWS):
        deviation = block - mean
        squares += np.square(deviation, out=deviation).sum(axis=0)
    scale = np.sqrt(squares / count)
    scale[scale < 1e-12] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def _row_sum(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """float64 sum of the rows of ``blocks`` (none longer than the first, as :func:`row_blocks` gives them)
    added in order, as ``X.sum(axis=0, dtype=np.float64)`` adds the rows of a matrix, and their count."""
    total, count, buffer = None, 0, None
    for block in blocks:
        if total is None:
            total = np.add.reduce(block, axis=0, dtype=np.float64)
            buffer = np.empty((len(block) + 1, block.shape[1]))
        else:  # the running sum as the first row: one reduction adds the rows after it in order
            buffer[0] = total
            buffer[1:len(block) + 1] = block
            total = np.add.reduce(buffer[:len(block) + 1], axis=0)
        count += len(block)
    if total is None:
        raise InputError("an empty pool has no feature mean or scale")
    return total, count


def row_blocks(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The rows of ``blocks`` (in order) again as blocks of ``size`` rows, the last one shorter: slices of a
    block where it holds them, a copy only of the rows that straddle two blocks."""
    pending: list[np.ndarray] = []
    count = 0
    for block in blocks:
        first = 0  # the block's first row not yet given
        if pending:
            first = min(size - count, len(block))
            pending.append(block[:first])
            count += first
            if count < size:
                continue
            yield np.concatenate(pending)
            pending, count = [], 0
        for start in range(first, len(block), size):
            if len(block) - start < size:
                pending, count = [block[start:]], len(block) - start
                break
            yield block[start:start + size]
    if pending:
        yield np.concatenate(pending)


@contextmanager
def rows_in_front(X: np.ndarray, rows: np.ndarray) -> Iterator[np.ndarray]:
    """Rows ``rows`` (ascending) of the writable matrix ``X`` as one matrix, ``X[:len(rows)]``, without a copy:
    moved to the front in place for the ``with`` block, and ``X`` restored after it (the other rows are saved
    meanwhile). For estimators that need an array of the rows (k-means), where ``np.asarray(PoolRows)`` would
    copy nearly the whole matrix."""
    rows = np.asarray(rows, np.int64)
    if len(rows) == len(X):  # every row, ascending: already in front (no pass copying the matrix onto itself)
        yield X
        return
    others = np.setdiff1d(np.arange(len(X)), rows)
    saved = X[others]
    moved: list[slice] = []
    try:
        for start in range(0, len(rows), SCORE_ROWS):  # row i moves to i <= rows[i]: never onto one still to move
            block = slice(start, min(start + SCORE_ROWS, len(rows)))
            X[block] = X[rows[block]]
            moved.append(block)
        yield X[:len(rows)]
    finally:
        for block in reversed(moved):  # back, last block first
            X[rows[block]] = X[block].copy()
        X[others] = saved


def standardise(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """``(X - mean) / scale`` as float32, block by block; ``copy=False`` overwrites ``X`` itself when it is a
    writable float32 array (no second copy of a large pool)."""
    X = np.asarray(X)
    inplace = not copy and X.dtype == np.float32 and X.flags.writeable
    out = X if inplace else np.empty(X.shape, np.float32)
    for start in range(0, len(X), SCORE_ROWS):
        block = out[start:start + SCORE_ROWS]
        np.subtract(np.asarray(X[start:start + SCORE_ROWS], np.float32), mean, out=block)
        np.divide(block, scale, out=block)
    return out
