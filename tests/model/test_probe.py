"""The training probe: cross-validated k-NN / linear macro-F1 and the collapse monitor."""
from __future__ import annotations

import numpy as np
import pytest

from hemoembed.errors import InputError
from hemoembed.model.probe import embedding_spread, probe_scores


def _clusters(seed: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array(["a", "b", "c", "d"]), 30)
    centres = rng.normal(size=(4, 64))
    return centres[np.searchsorted(["a", "b", "c", "d"], labels)] + spread * rng.normal(size=(120, 64)), labels


def test_separable_classes_score_high_and_noise_scores_near_chance() -> None:
    separable = [probe_scores(*_clusters(seed, 0.2), seed=seed) for seed in range(3)]
    noise = [probe_scores(np.random.default_rng(seed).normal(size=(120, 64)), _clusters(seed, 0)[1], seed=seed)
             for seed in range(3)]
    for key in ("probe_knn_f1", "probe_linear_f1"):
        assert np.mean([s[key] for s in separable]) > 0.95
        assert np.mean([s[key] for s in noise]) < 0.45  # chance is 0.25


def test_spread_tells_collapse_from_an_even_spread() -> None:
    rng = np.random.default_rng(0)
    assert embedding_spread(rng.normal(size=(2000, 256))) == pytest.approx(1.0, abs=0.03)
    collapsed = np.ones((500, 256)) + 1e-3 * rng.normal(size=(500, 256))
    assert embedding_spread(collapsed) < 0.01


def test_needs_two_classes_with_two_images() -> None:
    with pytest.raises(InputError, match="two classes"):
        probe_scores(np.zeros((3, 4)), ["a", "a", "b"])
