"""EM prior shift (Saerens et al. 2002) on Gaussian classes whose true posteriors are known."""
import numpy as np
import pytest

from hemoembed.errors import InputError
from hemoembed.tasks.common import em_priors


def _balanced_posteriors(mix, n, seed):
    """Images of 3 unit-variance Gaussian classes drawn with ``mix``, and their exact posteriors under a
    uniform prior (what a classifier trained on balanced shots would ideally output)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=mix)
    mu = np.eye(3) * 1.5
    x = mu[y] + rng.normal(size=(n, 3))
    ll = -0.5 * ((x[:, None, :] - mu[None]) ** 2).sum(-1)
    p = np.exp(ll - ll.max(axis=1, keepdims=True))
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_recovers_the_mix_and_raises_accuracy(seed):
    mix = np.array([0.7, 0.2, 0.1])
    y, p = _balanced_posteriors(mix, 3000, seed)
    priors, adjusted = em_priors(p)
    assert np.abs(priors - mix).max() < 0.04
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0)
    assert (adjusted.argmax(1) == y).mean() > (p.argmax(1) == y).mean() + 0.03


def test_em_leaves_a_balanced_site_alone_and_checks_its_input():
    y, p = _balanced_posteriors(np.full(3, 1 / 3), 3000, 0)
    priors, adjusted = em_priors(p)
    assert np.abs(priors - 1 / 3).max() < 0.03
    assert (adjusted.argmax(1) == p.argmax(1)).mean() > 0.97
    with pytest.raises(InputError, match="3 positive numbers"):
        em_priors(p, [0.5, 0.5])
    with pytest.raises(InputError, match="non-empty"):
        em_priors(np.zeros((0, 3)))
