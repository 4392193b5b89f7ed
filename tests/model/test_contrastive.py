"""NT-Xent and DCL: equal to direct NumPy transcriptions of their formulas, limits, gradients, serialisation."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from hemoembed.errors import InputError
from hemoembed.model.contrastive import NTXentLoss, ntxent_loss
from hemoembed.model.training import loss_function


def _reference(labels: np.ndarray, x: np.ndarray, temperature: float, decoupled: bool = False) -> float:
    """SimCLR's NT-Xent (or DCL: the positives not in the denominator) written out anchor by anchor (float64)."""
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = z @ z.T / temperature
    losses = []
    for i in range(len(labels)):
        others = [k for k in range(len(labels)) if k != i]
        positives = [p for p in others if labels[p] == labels[i]]
        negatives = [k for k in others if labels[k] != labels[i]]
        if not positives or (decoupled and not negatives):
            continue
        log_denominator = np.log(np.sum(np.exp(sim[i, negatives if decoupled else others])))
        losses.append(np.mean([log_denominator - sim[i, p] for p in positives]))
    return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_equals_the_formula_on_two_view_batches(seed: int, temperature: float, decoupled: bool) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(16), 2))
    x = rng.normal(size=(32, 24)).astype(np.float32)
    ours = float(ntxent_loss(labels, x, temperature, decoupled=decoupled))
    assert ours == pytest.approx(_reference(labels, x, temperature, decoupled), rel=1e-5)


@pytest.mark.parametrize("decoupled", [False, True])
def test_several_positives_and_anchors_without_one(decoupled: bool) -> None:
    rng = np.random.default_rng(7)
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])  # class 2 has no positive: it only serves as a negative
    x = rng.normal(size=(8, 5)).astype(np.float32)
    expected = _reference(labels, x, 0.2, decoupled)
    assert float(ntxent_loss(labels, x, 0.2, decoupled=decoupled)) == pytest.approx(expected, rel=1e-5)
    assert float(ntxent_loss(np.arange(6), rng.normal(size=(6, 5)), 0.2, decoupled=decoupled)) == 0.0


def test_decoupled_differs_by_the_positive_term_and_skips_anchors_without_a_negative() -> None:
    """DCL is NT-Xent minus log(1 + Σ_p e^{s_ip} / Σ_n e^{s_in}) per anchor: strictly smaller, and a batch
    whose rows are all one image has no negative, so DCL has nothing to average (0.0) where NT-Xent has."""
    rng = np.random.default_rng(3)
    labels, x = np.repeat(np.arange(6), 2), rng.normal(size=(12, 8)).astype(np.float32)
    assert float(ntxent_loss(labels, x, 0.2, decoupled=True)) < float(ntxent_loss(labels, x, 0.2)) - 0.01
    same = rng.normal(size=(4, 8)).astype(np.float32)
    assert float(ntxent_loss(np.zeros(4), same, 0.2, decoupled=True)) == 0.0
    assert float(ntxent_loss(np.zeros(4), same, 0.2)) > 0.0


def test_aligned_views_score_far_below_random_ones_and_scale_does_not_matter() -> None:
    labels = np.repeat(np.arange(8), 2)
    aligned = np.repeat(np.eye(8, 16), 2, axis=0).astype(np.float32)
    random = np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32)
    assert float(ntxent_loss(labels, aligned, 0.1)) < 0.01 < float(ntxent_loss(labels, random, 0.1))
    assert float(ntxent_loss(labels, 7.0 * random, 0.1)) == pytest.approx(float(ntxent_loss(labels, random, 0.1)),
                                                                          rel=1e-5)


@pytest.mark.parametrize("decoupled", [False, True])
def test_gradient_is_finite_and_pulls_views_together(decoupled: bool) -> None:
    labels = tf.constant(np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]))  # one image three times
    x = tf.Variable(np.random.default_rng(1).normal(size=(11, 6)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = ntxent_loss(labels, x, 0.2, decoupled=decoupled)
    grad = tape.gradient(loss, x)
    assert np.isfinite(grad.numpy()).all()
    x.assign_sub(0.5 * grad)
    assert float(ntxent_loss(labels, x, 0.2, decoupled=decoupled)) < float(loss)
    lone = tf.Variable(np.random.default_rng(2).normal(size=(3, 6)).astype(np.float32))
    with tf.GradientTape() as tape:  # no negative anywhere: DCL averages nothing, and nothing moves
        loss = ntxent_loss(tf.zeros(3), lone, 0.2, decoupled=True)
    assert float(loss) == 0.0 and not tape.gradient(loss, lone).numpy().any()


def test_runs_inside_a_compiled_function_and_serialises() -> None:
    labels, x = np.repeat(np.arange(4), 2), np.random.default_rng(2).normal(size=(8, 6)).astype(np.float32)
    compiled = tf.function(lambda a, b: ntxent_loss(a, b, 0.3), jit_compile=True)
    assert float(compiled(labels, x)) == pytest.approx(float(ntxent_loss(labels, x, 0.3)), rel=1e-5)
    loss = keras.losses.deserialize(keras.losses.serialize(NTXentLoss(temperature=0.3)))
    assert loss.temperature == 0.3 and float(loss(labels, x)) == pytest.approx(float(ntxent_loss(labels, x, 0.3)))
    dcl = keras.losses.deserialize(keras.losses.serialize(NTXentLoss(temperature=0.3, decoupled=True)))
    assert dcl.decoupled and float(dcl(labels, x)) == pytest.approx(float(ntxent_loss(labels, x, 0.3, decoupled=True)))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "0.2"])
def test_bad_temperature_is_a_one_line_error(bad) -> None:
    with pytest.raises(InputError, match="temperature"):
        ntxent_loss(np.arange(2), np.ones((2, 3)), bad)


def test_loss_names() -> None:
    assert loss_function("ntxent", temperature=0.5).keywords == {"temperature": 0.5, "decoupled": False}
    assert loss_function("dcl", temperature=0.5).keywords == {"temperature": 0.5, "decoupled": True}
    with pytest.raises(InputError, match="not one of semihard, hard, ntxent"):
        loss_function("contrastive")
