"""Query strategies (modAL's uncertainty, margin, entropy; random; uncertainty with diversity), the first
labelled set, the learner."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator

from ...errors import InputError

STRATEGIES: tuple[str, ...] = ("uncertainty", "margin", "entropy", "random", "diverse")
# diverse: the most uncertain DIVERSE_POOL × batch rows, clustered into batch groups, the most uncertain row of
# each (Zhdanov 2019, "Diverse mini-batch active learning"): a batch of 90 taken by uncertainty alone is
# often 90 near-copies of one confusion
DIVERSE_POOL = 10


INIT_STRATEGIES: tuple[str, ...] = ("stratified", "kmeans")


def random_sampling(classifier: object, X_pool: np.ndarray, n_instances: int = 1,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """modAL-style strategy: ``n_instances`` pool rows uniformly at random (the baseline), with zero scores."""
    rng = rng or np.random.default_rng()
    chosen = rng.choice(len(X_pool), size=min(n_instances, len(X_pool)), replace=False)
    return chosen, np.zeros(len(chosen))


def diverse_sampling(classifier: object, X_pool: np.ndarray, n_instances: int = 1,
                     rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """modAL-style strategy: one row per k-means cluster of the most uncertain rows (see :data:`DIVERSE_POOL`)."""
    from modAL.uncertainty import classifier_uncertainty
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    rng = rng or np.random.default_rng()
    uncertainty = classifier_uncertainty(classifier, X_pool)
    n = min(n_instances, len(X_pool))
    top = np.argsort(-uncertainty, kind="stable")[: DIVERSE_POOL * n]
    if n <= 1 or len(top) <= n:
        chosen = top[:n]
        return chosen, uncertainty[chosen]
    with warnings.catch_warnings():  # duplicate cells (PBC has some) give fewer groups: filled up below
        warnings.simplefilter("ignore", ConvergenceWarning)
        groups = KMeans(n_clusters=n, n_init=1, random_state=int(rng.integers(2**31))).fit_predict(X_pool[top])
    # top is sorted by uncertainty, so the first row of a group is its most uncertain one
    firsts = np.unique(groups, return_index=True)[1]  # ordered by group label
    rest = np.setdiff1d(np.arange(len(top)), firsts)[: n - len(firsts)]  # fewer groups (duplicate rows): fill up
    chosen = top[np.concatenate([firsts, rest])]
    return chosen, uncertainty[chosen]


def query_strategy(name: str, rng: np.random.Generator) -> Callable:
    """The modAL query function for ``name`` (ties broken by modAL's own ordering)."""
    from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling

    table = {"uncertainty": uncertainty_sampling, "margin": margin_sampling, "entropy": entropy_sampling}
    if name == "random":
        return lambda clf, X, n_instances=1: random_sampling(clf, X, n_instances, rng)
    if name == "diverse":
        return lambda clf, X, n_instances=1: diverse_sampling(clf, X, n_instances, rng)
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
