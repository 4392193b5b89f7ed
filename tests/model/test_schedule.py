"""The learning-rate schedule: linear warm-up, then constant or cosine decay (``--lr-decay``)."""
import numpy as np
import pytest

from hemoembed.model.training import WarmupCosine


def _values(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_constant_without_warmup_is_the_base_rate_throughout():
    np.testing.assert_allclose(_values(WarmupCosine(1e-3, 0, 100), [0, 50, 99, 500]), 1e-3)


def test_warmup_rises_linearly_then_cosine_falls_to_zero():
    schedule = WarmupCosine(1e-3, warmup_steps=10, total_steps=110, decay="cosine")
    np.testing.assert_allclose(_values(schedule, [0, 4, 9]), [1e-4, 5e-4, 1e-3], rtol=1e-5)
    # cosine over the 100 steps after the warm-up: half way at step 60, zero at the end and beyond
    np.testing.assert_allclose(_values(schedule, [10, 60, 110, 200]), [1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    assert np.all(np.diff(_values(schedule, range(10, 111))) <= 0)


@pytest.mark.parametrize("decay", ["constant", "cosine"])
def test_the_plateau_factor_scales_the_rate(decay):
    import keras

    factor = keras.Variable(0.5, trainable=False)
    schedule = WarmupCosine(1e-3, 0, 100, decay, factor)
    assert float(schedule(0)) == pytest.approx(5e-4)
    factor.assign(0.25)
    assert float(schedule(0)) == pytest.approx(2.5e-4)


def test_a_cooldown_holds_the_rate_then_falls_linearly_to_zero():
    """Warmup-stable-decay: constant until the last ``cooldown_steps``, then a straight line to 0 at the end."""
    schedule = WarmupCosine(1e-3, 0, 100, "constant", cooldown_steps=40)
    np.testing.assert_allclose(_values(schedule, [0, 30, 60]), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(_values(schedule, [70, 80, 99, 100, 150]), [7.5e-4, 5e-4, 2.5e-5, 0.0, 0.0],
                               rtol=1e-5, atol=1e-12)
    assert np.all(np.diff(_values(schedule, range(60, 101))) < 0)
    assert WarmupCosine.from_config(schedule.get_config()).cooldown_steps == 40
