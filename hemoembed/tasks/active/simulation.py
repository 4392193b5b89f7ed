"""Pool-based active-learning simulation: modAL's ``ActiveLearner`` over a warm-started linear SVM.

The simulation reveals labels from a known CSV so that query strategies (uncertainty, margin, entropy,
random) can be compared on one fixed held-out test set, as in the paper; the learner is
:class:`~.estimator.IncrementalLinearSVM`.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator

from ...errors import InputError
from .estimator import IncrementalLinearSVM, PoolRows, pool_standardiser, standardise
from .strategies import INIT_STRATEGIES, STRATEGIES, initial_indices, make_learner, query_strategy

TIDY_COLUMNS: tuple[str, ...] = ("strategy", "repeat", "iteration", "n_labels", "metric", "class", "value")
ALL_LABELS = "all-labels"  # pseudo-strategy: one fit on the whole pool, the curves' ceiling
# Above this pool size the ceiling is fitted with the SGD linear SVM (fit-svm's default solver): the learner's
# Gram matrix of the whole pool would need (1.2 n)^2 float64 values (38 GB at 50,000 cells).
GRAM_CEILING_MAX = 16_000


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
        if self.max_labels < 0:
            raise InputError(f"--max-labels {self.max_labels}: must be at least 0 (0: until the pool is exhausted)")
        if not (np.isfinite(self.C) and self.C > 0):
            raise InputError(f"--C {self.C}: must be a positive number")


def f1_rows(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], **keys: object) -> list[dict]:
    """Tidy rows: macro-F1 (class ``""``) and per-class F1, tagged with ``keys`` (shared evaluation code)."""
    from ..common.metrics import confusion, encode_labels, scores_from_confusion

    classes = [str(c) for c in classes]
    cm = confusion(encode_labels(y_true, classes, "test labels"), encode_labels(y_pred, classes, "predictions"),
                   len(classes))
    per_class = scores_from_confusion(cm)["f1"]
    rows = [{**keys, "metric": "macro_f1", "class": "", "value": float(np.mean(per_class))}]
    rows += [{**keys, "metric": "f1", "class": c, "value": float(v)} for c, v in zip(classes, per_class)]
    return rows


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
        picked, _ = learner.query(PoolRows(X_pool, remaining), n_instances=take)
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
             config: ActiveConfig, progress: Callable[[int], None] | None = None, *,
             copy: bool = True) -> list[dict]:
    """Every strategy × repeat, plus the all-labels ceiling (the SGD linear SVM above
    :data:`GRAM_CEILING_MAX` pool cells); returns tidy rows (see :data:`TIDY_COLUMNS`). ``copy=False``
    standardises writable float32 ``X_pool`` and ``X_test`` in place (the caller's arrays are overwritten):
    the pool is then held once, not twice."""
    config.validate()
    y_pool, y_test = np.asarray(y_pool).astype(str), np.asarray(y_test).astype(str)
    missing = sorted(set(y_test) - set(y_pool))
    if missing:
        raise InputError(f"test classes {', '.join(missing)} never occur in the pool")
    mean, scale = pool_standardiser(X_pool)
    Xp, Xt = standardise(X_pool, mean, scale, copy=copy), standardise(X_test, mean, scale, copy=copy)
    classes = np.unique(np.concatenate([y_pool, y_test]))
    if len(y_pool) <= GRAM_CEILING_MAX:
        ceiling = IncrementalLinearSVM(classes=classes, C=config.C).fit(Xp, y_pool)
    else:
        from ..svm.estimator import EmbeddingSVM

        ceiling = EmbeddingSVM("sgd", C=config.C, random_state=config.seed).fit(Xp, y_pool, "pool")
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
    from ...data.manifest import read_csv_records

    out = []
    for item in read_csv_records(path, TIDY_COLUMNS, "an active-learning results CSV"):
        for key in ("repeat", "iteration", "n_labels"):
            item[key] = int(item[key])
        item["value"] = float(item["value"])
        out.append(item)
    return out


