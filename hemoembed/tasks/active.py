"""Pool-based active learning on embeddings: modAL's ``ActiveLearner`` over a warm-started linear SVM.

The simulation reveals labels from a known CSV so that query strategies (uncertainty, margin, entropy,
random) can be compared on one fixed held-out test set, as in the paper. What makes a 16,000-image,
1280-d study with ~180 refits per curve practical on a laptop CPU is :class:`IncrementalLinearSVM`: the
same libsvm linear SVM, but on a Gram matrix grown by the new rows only, scored on the pool through
folded weight vectors, without Platt's five extra fits, and with features standardised once on the whole
(unlabelled) pool instead of refitting a scaler every step.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import InputError

STRATEGIES: tuple[str, ...] = ("uncertainty", "margin", "entropy", "random")
INIT_STRATEGIES: tuple[str, ...] = ("stratified", "kmeans")
TIDY_COLUMNS: tuple[str, ...] = ("strategy", "repeat", "iteration", "n_labels", "metric", "class", "value")
ALL_LABELS = "all-labels"  # pseudo-strategy: one fit on the whole pool, the curves' ceiling
GRAM_GROWTH = 1.2  # the Gram buffer holds (1.2 n)^2 values: a few reallocations over a whole curve
# Rows of the Gram matrix per product. numpy computes a whole X @ X.T with BLAS syrk, which segfaults in the
# multi-threaded OpenBLAS 0.3.31 shipped with numpy for 16,000 x 1280 and more (float64, 2 threads);
# row blocks go through gemm, which does not.
GRAM_BLOCK = 2048


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
        """Margins of every class pair (i, j), positive for class i: (N, n_pairs)."""
        return np.asarray(X, dtype=np.float64) @ self.pair_coef_.T + self.pair_intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
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
        X = np.asarray(X, dtype=np.float64)
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


def pool_standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of every feature over the whole (unlabelled) pool: known before any label."""
    mean = X.mean(axis=0, dtype=np.float64)
    scale = X.std(axis=0, dtype=np.float64)
    scale[scale < 1e-12] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def standardise(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((np.asarray(X, dtype=np.float32) - mean) / scale).astype(np.float32)


def random_sampling(classifier: object, X_pool: np.ndarray, n_instances: int = 1,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """modAL-style strategy: ``n_instances`` pool rows uniformly at random (the baseline), with zero scores."""
    rng = rng or np.random.default_rng()
    chosen = rng.choice(len(X_pool), size=min(n_instances, len(X_pool)), replace=False)
    return chosen, np.zeros(len(chosen))


def query_strategy(name: str, rng: np.random.Generator) -> Callable:
    """The modAL query function for ``name`` (ties broken by modAL's own ordering)."""
    from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling

    table = {"uncertainty": uncertainty_sampling, "margin": margin_sampling, "entropy": entropy_sampling}
    if name == "random":
        return lambda clf, X, n_instances=1: random_sampling(clf, X, n_instances, rng)
    if name not in table:
        raise InputError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
    return table[name]


def initial_indices(X: np.ndarray, y: np.ndarray | None, n: int, how: str, seed: int) -> np.ndarray:
    """First ``n`` pool rows to label: stratified by the (simulated) labels, or k-means medoids (label-free)."""
    rng = np.random.default_rng(seed)
    n = min(n, len(X))
    if how == "stratified":
        if y is None:
            raise InputError("--init-strategy stratified needs labels; use kmeans for an unlabelled pool")
        from sklearn.model_selection import train_test_split

        if n >= len(X):
            return np.arange(len(X))
        counts = np.unique(y, return_counts=True)[1]
        strat = y if counts.min() >= 2 and n >= len(counts) else None
        chosen, _ = train_test_split(np.arange(len(X)), train_size=n, stratify=strat, random_state=seed)
        return np.sort(chosen)
    if how == "kmeans":
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=n, random_state=seed, n_init=3, batch_size=max(1024, 3 * n)).fit(X)
        distances = km.transform(X)
        chosen: list[int] = []
        for k in rng.permutation(n):  # nearest not-yet-chosen row to every centre
            for i in np.argsort(distances[:, k]):
                if int(i) not in chosen:
                    chosen.append(int(i))
                    break
        return np.sort(np.array(chosen))
    raise InputError(f"unknown init strategy {how!r} (choose from {', '.join(INIT_STRATEGIES)})")


@dataclass
class ActiveConfig:
    """One simulation study: strategies side by side, several seeds, fixed test set."""

    strategies: tuple[str, ...] = STRATEGIES
    batch: int = 90
    init: int = 90
    init_strategy: str = "stratified"
    repeats: int = 1
    max_labels: int = 0  # 0: until the pool is exhausted
    test_fraction: float = 0.2
    C: float = 1.0
    seed: int = 0
    source: dict[str, str] = field(default_factory=dict)  # store / labels / column, for the record

    def validate(self) -> None:
        for name in self.strategies:
            if name not in STRATEGIES:
                raise InputError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
        if self.init_strategy not in INIT_STRATEGIES:
            raise InputError(f"unknown init strategy {self.init_strategy!r} (choose from {', '.join(INIT_STRATEGIES)})")
        if self.batch < 1 or self.init < 1 or self.repeats < 1:
            raise InputError("--batch, --init and --repeats must be at least 1")
        if not 0.0 < self.test_fraction < 1.0:
            raise InputError(f"--test-fraction must be between 0 and 1, got {self.test_fraction}")


def f1_rows(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], **keys: object) -> list[dict]:
    """Tidy rows: macro-F1 (class ``""``) and per-class F1, tagged with ``keys`` (shared evaluation code)."""
    from .evaluation import confusion, encode_labels, scores_from_confusion

    classes = [str(c) for c in classes]
    cm = confusion(encode_labels(y_true, classes, "test labels"), encode_labels(y_pred, classes, "predictions"),
                   len(classes))
    per_class = scores_from_confusion(cm)["f1"]
    rows = [{**keys, "metric": "macro_f1", "class": "", "value": float(np.mean(per_class))}]
    rows += [{**keys, "metric": "f1", "class": c, "value": float(v)} for c, v in zip(classes, per_class)]
    return rows


def make_learner(estimator: BaseEstimator, strategy: Callable, X: np.ndarray, y: np.ndarray):
    """A modAL ``ActiveLearner`` that also runs under scikit-learn ≥ 1.6.

    modAL 0.4.2 validates taught data with ``check_X_y(force_all_finite=...)``, a keyword scikit-learn
    1.8 removed; the subclass stacks the new rows itself (the same thing, without that call).
    """
    from modAL.models import ActiveLearner
    from modAL.utils.data import data_vstack

    class _Learner(ActiveLearner):
        def _add_training_data(self, X_new: np.ndarray, y_new: np.ndarray) -> None:
            if len(X_new) != len(y_new):
                raise InputError(f"{len(X_new)} samples but {len(y_new)} labels to teach")
            self.X_training = data_vstack((self.X_training, X_new))
            self.y_training = np.concatenate([self.y_training, np.asarray(y_new)])

    return _Learner(estimator=estimator, query_strategy=strategy, X_training=X, y_training=y)


def simulate_curve(X_pool: np.ndarray, y_pool: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *,
                   strategy: str, config: ActiveConfig, repeat: int, estimator: BaseEstimator | None = None,
                   progress: Callable[[int], None] | None = None) -> list[dict]:
    """One learning curve: init labels, then query ``batch`` at a time, retrain, score the test set."""
    classes = np.unique(np.concatenate([y_pool, y_test]))
    seed = config.seed * 1000 + repeat
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    np.random.seed(seed)  # modAL breaks ties with the global generator
    labelled = initial_indices(X_pool, y_pool, config.init, config.init_strategy, seed)
    remaining = np.setdiff1d(np.arange(len(X_pool)), labelled)
    learner = make_learner(estimator or IncrementalLinearSVM(classes=classes, C=config.C),
                           query_strategy(strategy, rng), X_pool[labelled], y_pool[labelled])
    limit = config.max_labels or len(X_pool)
    rows: list[dict] = []
    iteration = 0
    while True:
        n_labels = len(learner.y_training)
        rows += f1_rows(y_test, learner.predict(X_test), classes, strategy=strategy, repeat=repeat,
                        iteration=iteration, n_labels=n_labels)
        if progress:
            progress(1)
        if len(remaining) == 0 or n_labels >= limit:
            return rows
        take = min(config.batch, len(remaining), limit - n_labels)
        picked, _ = learner.query(X_pool[remaining], n_instances=take)
        picked = remaining[np.asarray(picked, dtype=int)]
        learner.teach(X_pool[picked], y_pool[picked])
        remaining = np.setdiff1d(remaining, picked, assume_unique=True)
        iteration += 1


def n_iterations(n_pool: int, config: ActiveConfig) -> int:
    """Points on one curve (for progress bars)."""
    limit = min(config.max_labels or n_pool, n_pool)
    first = min(config.init, n_pool)
    return 1 + max(0, -(-(limit - first) // config.batch))


def simulate(X_pool: np.ndarray, y_pool: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
             config: ActiveConfig, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Every strategy × repeat, plus the all-labels ceiling; returns tidy rows (see :data:`TIDY_COLUMNS`)."""
    config.validate()
    y_pool, y_test = np.asarray(y_pool).astype(str), np.asarray(y_test).astype(str)
    missing = sorted(set(y_test) - set(y_pool))
    if missing:
        raise InputError(f"test classes {', '.join(missing)} never occur in the pool")
    mean, scale = pool_standardiser(X_pool)
    Xp, Xt = standardise(X_pool, mean, scale), standardise(X_test, mean, scale)
    classes = np.unique(np.concatenate([y_pool, y_test]))
    ceiling = IncrementalLinearSVM(classes=classes, C=config.C).fit(Xp, y_pool)
    rows = f1_rows(y_test, ceiling.predict(Xt), classes, strategy=ALL_LABELS, repeat=0, iteration=0,
                   n_labels=len(y_pool))
    for repeat in range(config.repeats):
        for strategy in config.strategies:
            rows += simulate_curve(Xp, y_pool, Xt, y_test, strategy=strategy, config=config, repeat=repeat,
                                   progress=progress)
    return rows


def tidy_csv_text(rows: Sequence[dict]) -> str:
    """The tidy long format: one value per row (strategy, repeat, iteration, n_labels, metric, class, value)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(TIDY_COLUMNS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "value": f"{row['value']:.6f}"})
    return buffer.getvalue()


def read_tidy_csv(path: str) -> list[dict]:
    """Rows of a tidy CSV written by :func:`tidy_csv_text` (numbers parsed)."""
    from ..data.manifest import read_csv_rows

    header, rows = read_csv_rows(path)
    missing = [c for c in TIDY_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}: not an active-learning results CSV (missing column(s) {', '.join(missing)})")
    out = []
    for row in rows:
        item = dict(zip(header, row))
        for key in ("repeat", "iteration", "n_labels"):
            item[key] = int(item[key])
        item["value"] = float(item["value"])
        out.append(item)
    return out


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
