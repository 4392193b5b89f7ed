"""An active learner on arrays, for a notebook: fit on the first labels, ``query`` the pool, ``teach``, repeat.

The same machinery as the simulation and the labelling session (:class:`~.estimator.IncrementalLinearSVM`
under modAL's strategies); features are standardised with the statistics of the whole pool when one is
given to :meth:`ActiveLearner.fit` (known before any label).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ...errors import InputError
from .estimator import IncrementalLinearSVM, pool_standardiser, standardise
from .strategies import STRATEGIES, make_learner, query_strategy


class ActiveLearner(ClassifierMixin, BaseEstimator):
    """Pool-based active learning with a linear SVM: ``fit`` → ``query`` → ``teach`` → ``query`` ...

    ``strategy``: uncertainty, margin, entropy, random or diverse. ``classes`` fixes the class list while some
    classes are still unlabelled. ``query`` returns indices into the array it is given; ``teach`` adds
    labelled rows and refits (only the new Gram rows are computed).
    """

    def __init__(self, strategy: str = "uncertainty", C: float = 1.0, classes: Sequence[str] | None = None,
                 batch: int = 90, random_state: int = 0) -> None:
        self.strategy = strategy
        self.C = C
        self.classes = classes
        self.batch = batch
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Sequence[str], pool: np.ndarray | None = None) -> ActiveLearner:
        """Start from labelled rows ``X``, ``y``; ``pool`` (all candidate rows, unlabelled) fixes the
        standardisation (default: ``X``'s own statistics)."""
        if self.strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) == 0 or len(X) != len(y):
            raise InputError(f"fit needs a non-empty (N, D) matrix and N labels, got {X.shape} and {len(y)} labels")
        self.mean_, self.scale_ = pool_standardiser(np.asarray(pool if pool is not None else X, dtype=np.float32))
        y = np.asarray([str(v) for v in y])
        np.random.seed(self.random_state)  # modAL breaks ties with the global generator
        rng = np.random.default_rng(self.random_state)
        estimator = IncrementalLinearSVM(classes=self.classes, C=self.C)
        self.learner_ = make_learner(estimator, query_strategy(self.strategy, rng), self._scaled(X), y)
        self.classes_ = self.learner_.estimator.classes_
        return self

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "mean_"):
            raise InputError("ActiveLearner is not fitted yet")
        return standardise(np.asarray(X, dtype=np.float32), self.mean_, self.scale_)

    @property
    def n_labels_(self) -> int:
        """Labelled rows taught so far."""
        self._scaled(np.zeros((0, len(getattr(self, "mean_", ())))))
        return len(self.learner_.y_training)

    def query(self, X_pool: np.ndarray, n: int | None = None) -> np.ndarray:
        """Indices (into ``X_pool``) of the ``n`` (default ``batch``) rows to label next, most useful first."""
        X_pool = self._scaled(X_pool)
        picked, _ = self.learner_.query(X_pool, n_instances=min(int(n or self.batch), len(X_pool)))
        return np.asarray(picked, dtype=np.int64)

    def teach(self, X: np.ndarray, y: Sequence[str]) -> ActiveLearner:
        """Add labelled rows and refit."""
        X = self._scaled(X)
        self.learner_.teach(X, np.asarray([str(v) for v in y]))
        self.classes_ = self.learner_.estimator.classes_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._scaled(X)
        return self.learner_.predict(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = self._scaled(X)
        return self.learner_.predict_proba(X)
