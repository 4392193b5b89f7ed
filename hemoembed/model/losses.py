"""Triplet losses with online mining, written with ``keras.ops`` only and equal to tensorflow-addons 0.23.

tensorflow-addons is end of life and does not import under Keras 3, so its ``triplet_semihard_loss`` and
``triplet_hard_loss`` are re-implemented here operation for operation (same distance formulas, same
masked minimum/maximum arithmetic, same tie rules). ``tests/test_losses.py`` checks them against values
recorded from the real library (``scripts/make_tfa_parity_fixture.py``, ``tests/fixtures/tfa_parity.json``).
Being pure ``keras.ops`` they run eagerly, inside ``tf.function``, with XLA and under ``tf.distribute``.

Deliberate deviations from tfa, all in cases where tfa returns a non-finite or lower-precision value:

* semi-hard loss on a batch without any positive pair: tfa divides by zero (NaN); we return 0.0;
* soft hard loss: tfa computes ``log1p(exp(x))``, which overflows to inf for x > ~88 (e.g. squared-L2
  on unnormalised embeddings); we use the numerically stable softplus, equal elsewhere;
* float16/bfloat16 embeddings: both compute in float32, but tfa casts the loss back to the input dtype;
  we return float32 (mixed-precision safe: the loss scale sees the precise value).

Memory: the semi-hard mining compares every (anchor, positive, negative) triple, an O(B³) boolean and
float tensor exactly as in tfa (B = 100: 4 MB; B = 200: 32 MB).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

import keras
from keras import ops

from ..errors import InputError

DISTANCES = ("L2", "squared-L2", "angular")
# Angular distances within this of each other are ties: 8 float32 ulps at 1-2. The CPU's rsqrt and
# matrix-product kernels leave a few ulps of noise that depends on a row's position in the batch (measured:
# one direction at 1.2e-7 from itself in one row, 2.4e-7 in another, on a 2-core Xeon), so exact equality
# would break ties differently on different machines; a real gap this small is an angle under 0.002 rad.
ANGULAR_TIE = 2.0**-19


def _check_distance(distance: Any) -> str:
    if not isinstance(distance, str) or distance not in DISTANCES:
        raise InputError(f"triplet loss: distance {distance!r} is not one of {', '.join(DISTANCES)}")
    return distance


def _check_margin(margin: Any) -> float:
    if isinstance(margin, bool) or not isinstance(margin, Real) or not math.isfinite(margin) or margin < 0:
        raise InputError(f"triplet loss: margin {margin!r} is not a finite number >= 0")
    return float(margin)


def _check_soft(soft: Any) -> bool:
    if not isinstance(soft, bool):
        raise InputError(f"triplet loss: soft {soft!r} is not True or False")
    return soft


def pairwise_distances(embeddings: Any, distance: str = "L2") -> Any:
    """(B, D) embeddings → (B, B) float32 distance matrix, computed exactly as tfa does.

    "L2"/"squared-L2": ``|a|² + |b|² − 2a·b`` clipped at 0; for "L2" the square root is taken with
    1e-16 added where the squared distance is 0 (so the gradient stays finite), those entries and the
    diagonal are then zeroed. "angular": ``1 − cos`` of row-wise L2-normalised vectors, 0 where it is below
    ``ANGULAR_TIE`` (tfa clips at 0; on some CPUs identical directions then come out at 1e-7 to 2e-7
    instead of 0 and exact ties break).
    """
    _check_distance(distance)
    x = ops.cast(embeddings, "float32")
    squared_norms = ops.sum(ops.square(x), axis=1, keepdims=True)
    if distance == "angular":
        unit = x * ops.rsqrt(ops.maximum(squared_norms, 1e-12))
        angular = 1.0 - ops.matmul(unit, ops.transpose(unit))
        # this close to 0, 1 − cos is rounding noise whose sign and size depend on the CPU's rsqrt and
        # matrix-product kernels: snap it to 0 so equal directions tie exactly on every machine
        return ops.where(angular < ANGULAR_TIE, 0.0, angular)
    squared = squared_norms + ops.transpose(squared_norms) - 2.0 * ops.matmul(x, ops.transpose(x))
    squared = ops.maximum(squared, 0.0)
    is_zero = ops.cast(ops.less_equal(squared, 0.0), "float32")
    dist = ops.sqrt(squared + is_zero * 1e-16) if distance == "L2" else squared
    dist = dist * (1.0 - is_zero)
    return ops.where(_diagonal(x), 0.0, dist)


def _diagonal(x: Any) -> Any:
    """(B, B) boolean identity for the rows of ``x`` (batch size may be dynamic)."""
    index = ops.arange(ops.shape(x)[0])
    return ops.equal(ops.expand_dims(index, 1), ops.expand_dims(index, 0))


def _prepare(labels: Any, embeddings: Any, distance: str) -> tuple[Any, Any, Any, Any]:
    """Validate shapes; return (distances, same-label mask, negative mask, positive-pair mask)."""
    embeddings = ops.convert_to_tensor(embeddings)
    labels = ops.convert_to_tensor(labels)
    if len(embeddings.shape) != 2:
        raise InputError(f"triplet loss: embeddings must be (batch, dim), got shape {tuple(embeddings.shape)}")
    if len(labels.shape) not in (1, 2) or (len(labels.shape) == 2 and labels.shape[1] not in (1, None)):
        raise InputError(f"triplet loss: labels must be (batch,) or (batch, 1), got shape {tuple(labels.shape)}")
    batch, label_batch = embeddings.shape[0], labels.shape[0]
    if batch is not None and label_batch is not None and batch != label_batch:
        raise InputError(f"triplet loss: {label_batch} labels for {batch} embeddings")
    labels = ops.reshape(labels, (-1,))
    dist = pairwise_distances(embeddings, distance)
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    positive = ops.logical_and(same, ops.logical_not(_diagonal(dist)))
    return dist, same, ops.logical_not(same), positive


def _masked_min(data: Any, mask: Any, row_max: Any, axis: int = -1) -> Any:
    """tfa's masked minimum: ``min(where(mask, data − row_max, 0)) + row_max``.

    ``row_max`` is the maximum over the whole row (masked or not). Subtracting and adding it back is
    kept on purpose: it rounds like tfa, and an empty mask yields ``row_max`` as in tfa.
    """
    return ops.min(ops.where(mask, data - row_max, 0.0), axis=axis, keepdims=True) + row_max


def _masked_max(data: Any, mask: Any, row_min: Any, axis: int = -1) -> Any:
    """tfa's masked maximum: ``max(where(mask, data − row_min, 0)) + row_min`` (empty mask → row_min)."""
    return ops.max(ops.where(mask, data - row_min, 0.0), axis=axis, keepdims=True) + row_min


def triplet_semihard_loss(labels: Any, embeddings: Any, margin: float = 0.5, distance: str = "L2") -> Any:
    """Semi-hard triplet loss (FaceNet), equal to tfa 0.23's ``triplet_semihard_loss``.

    For every positive pair (anchor i, positive p) the negative is the closest negative n of i with
    ``d(i, n) > d(i, p)`` (strictly: ties do not count, and the margin is not part of this test); if none
    exists, the farthest negative of i. Loss = sum over positive pairs of ``max(margin + d(i, p) −
    d(i, n), 0)`` divided by the number of positive pairs (ordered, diagonal excluded).

    labels: (B,) or (B, 1) integer class ids (exact in float32 up to 2**24). embeddings: (B, D), any
    float dtype; computed in float32 and returned as a float32 scalar. Deviation from tfa: a batch
    without any positive pair gives 0.0 (tfa: NaN from 0/0). Distances: "L2", "squared-L2", "angular"; for
    "angular" a negative must be farther by more than ``ANGULAR_TIE`` (tfa: by anything), because equal
    angles come out a few ulps apart depending on the CPU (see ``ANGULAR_TIE``).
    """
    margin = _check_margin(margin)
    distance = _check_distance(distance)
    dist, _, negative, positive = _prepare(labels, embeddings, distance)
    # farther[i, p, n]: n is a negative of i and farther from i than p is (beyond rounding noise).
    dist_in = ops.expand_dims(dist, 1)  # [i, ., n]
    bar = ops.expand_dims(dist, 2) + (ANGULAR_TIE if distance == "angular" else 0.0)
    farther = ops.logical_and(ops.expand_dims(negative, 1), ops.greater(dist_in, bar))
    row_max = ops.max(dist, axis=1, keepdims=True)
    outside = ops.squeeze(_masked_min(dist_in, farther, ops.expand_dims(row_max, 1)), axis=2)
    inside = _masked_max(dist, negative, ops.min(dist, axis=1, keepdims=True))
    semi_hard = ops.where(ops.any(farther, axis=2), outside, inside)
    positive = ops.cast(positive, "float32")
    violations = ops.maximum((margin + dist - semi_hard) * positive, 0.0)
    return ops.divide_no_nan(ops.sum(violations), ops.sum(positive))


def triplet_hard_loss(
    labels: Any, embeddings: Any, margin: float = 0.5, soft: bool = False, distance: str = "L2"
) -> Any:
    """Batch-hard triplet loss, equal to tfa 0.23's ``triplet_hard_loss``.

    Per anchor i: hardest positive ``P = max d(i, p)`` and hardest negative ``N = min d(i, n)``
    (tfa's masked extrema: an anchor without positives gets ``P`` = its smallest distance, one without
    negatives gets ``N`` = its largest). Loss = mean over anchors of ``max(P − N + margin, 0)``, or of
    ``softplus(P − N)`` when ``soft`` (margin unused). Computed in float32, float32 scalar result.
    Deviation from tfa: softplus is the stable one (tfa's ``log1p(exp(x))`` overflows to inf).
    """
    margin, soft = _check_margin(margin), _check_soft(soft)
    dist, _, negative, positive = _prepare(labels, embeddings, _check_distance(distance))
    hardest_negative = _masked_min(dist, negative, ops.max(dist, axis=1, keepdims=True))
    hardest_positive = _masked_max(dist, positive, ops.min(dist, axis=1, keepdims=True))
    gap = hardest_positive - hardest_negative
    per_anchor = ops.softplus(gap) if soft else ops.maximum(gap + margin, 0.0)
    return ops.mean(per_anchor)


@keras.saving.register_keras_serializable(package="hemoembed")
class TripletSemiHardLoss(keras.losses.Loss):
    """Keras loss wrapping :func:`triplet_semihard_loss`: ``y_true`` = labels, ``y_pred`` = embeddings.

    Returns one scalar per batch (the mining needs the whole batch), so ``sample_weight`` is not
    meaningful. Defaults follow the paper (margin 0.5, L2), not tfa's margin 1.0.
    """

    def __init__(
        self, margin: float = 0.5, distance: str = "L2", name: str = "triplet_semihard_loss", **kwargs: Any
    ) -> None:
        self.margin = _check_margin(margin)
        self.distance = _check_distance(distance)
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return triplet_semihard_loss(y_true, y_pred, margin=self.margin, distance=self.distance)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "distance": self.distance}


@keras.saving.register_keras_serializable(package="hemoembed")
class TripletHardLoss(keras.losses.Loss):
    """Keras loss wrapping :func:`triplet_hard_loss`: ``y_true`` = labels, ``y_pred`` = embeddings."""

    def __init__(
        self,
        margin: float = 0.5,
        soft: bool = False,
        distance: str = "L2",
        name: str = "triplet_hard_loss",
        **kwargs: Any,
    ) -> None:
        self.margin = _check_margin(margin)
        self.soft = _check_soft(soft)
        self.distance = _check_distance(distance)
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return triplet_hard_loss(y_true, y_pred, margin=self.margin, soft=self.soft, distance=self.distance)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "soft": self.soft, "distance": self.distance}
