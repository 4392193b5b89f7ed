"""Query strategies: the diverse batch spreads over distinct confusions where uncertainty takes near-copies."""
from __future__ import annotations

import numpy as np

from hemoembed.tasks.active.strategies import diverse_sampling, query_strategy


class _Boundary:
    """A fixed two-class classifier whose boundary is x0 = 0: rows near it are the uncertain ones."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-10.0 * X[:, 0]))
        return np.stack([1.0 - p, p], axis=1)


def _pool() -> tuple[np.ndarray, np.ndarray]:
    """Group 0: 20 near-copies on the boundary; groups 1-5 (10 rows each) further along it, each a little
    further from it than the last, and 200 confident rows."""
    rng = np.random.default_rng(0)
    rows, groups = [], []
    for g, (n, x0) in enumerate([(20, 0.0), (10, 0.05), (10, 0.06), (10, 0.07), (10, 0.08), (10, 0.09)]):
        rows.append(np.c_[x0 + rng.normal(0, 1e-3, n), 10.0 * g + rng.normal(0, 1e-2, n)])
        groups += [g] * n
    rows.append(np.c_[rng.choice([-1.0, 1.0], 200), rng.uniform(0, 50, 200)])
    groups += [-1] * 200
    return np.concatenate(rows), np.asarray(groups)


def test_diverse_batch_covers_every_uncertain_group_uncertainty_takes_one():
    X, groups = _pool()
    plain, _ = query_strategy("uncertainty", np.random.default_rng(0))(_Boundary(), X, n_instances=5)
    assert set(groups[plain]) == {0}  # five near-copies of the same confusion
    for seed in range(3):
        chosen, scores = diverse_sampling(_Boundary(), X, n_instances=5, rng=np.random.default_rng(seed))
        assert len(chosen) == 5 and len(set(chosen.tolist())) == 5
        # the 50 most uncertain rows are groups 0-3: each gets a pick, confident rows none
        assert set(groups[chosen]) == {0, 1, 2, 3}
        assert np.all(scores > 0.3)


def test_diverse_batch_of_duplicates_still_has_the_batch_size():
    X = np.zeros((30, 2))  # three points, 10 copies each: k-means finds 3 groups for a batch of 4
    X[:, 0] = np.repeat([0.0, 0.5, 1.0], 10)
    chosen, _ = diverse_sampling(_Boundary(), X, n_instances=4, rng=np.random.default_rng(0))
    assert len(chosen) == 4 and len(set(chosen.tolist())) == 4
