"""NT-Xent, the normalised-temperature cross-entropy of SimCLR (Chen et al. 2020), in ``keras.ops``.

Every row of the batch is an anchor; its positives are the other rows with the same label (in a two-view
batch exactly one: the other view of the same image), every other row is a negative. With
``z`` the L2-normalised rows and ``s_ij = z_i · z_j / τ``::

    loss_i = −(1/|P(i)|) Σ_{p∈P(i)} log( exp(s_ip) / Σ_{k≠i} exp(s_ik) )

averaged over the anchors that have a positive. With one positive per anchor this is SimCLR's NT-Xent;
with several it is the "outside" supervised-contrastive form (Khosla et al. 2020), so a batch that holds an
image twice stays well defined. Labels, not positions, say which rows pair up, so the loss takes the same
``(labels, embeddings)`` arguments as the triplet losses and works on an all-gathered global batch.

Why it is offered beside semi-hard triplets: in SimCLR's loss comparison (Table 4; both losses tuned,
linear evaluation) NT-Xent scored 63.9 % against 57.9 % for margin triplet with semi-hard negatives, and
from random weights it spreads the embeddings from the first step, where semi-hard mining starts at the
margin with every pair at almost the same distance (benchmarks/RESULTS.md, "Pretraining").

``decoupled=True`` is DCL (Yeh et al. 2022, "Decoupled Contrastive Learning"): the positives leave the
denominator, which then sums over the negatives ``N(i)`` only::

    loss_i = −(1/|P(i)|) Σ_{p∈P(i)} s_ip + log Σ_{k∈N(i)} exp(s_ik)

NT-Xent's gradient is scaled by how far the positive already dominates the softmax (the
negative-positive coupling), which slows learning when the batch holds few negatives; DCL drops that
factor. lightly's ImageNet benchmark (ResNet-50, batch 256, 100 epochs): SimCLR 63.2 % linear top-1, with
DCL 65.1 %. Anchors without a negative are left out, as anchors without a positive are.
"""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from .options import DEFAULT_TEMPERATURE, check_temperature


def ntxent_loss(labels: Any, embeddings: Any, temperature: float = DEFAULT_TEMPERATURE,
                decoupled: bool = False) -> Any:
    """Mean NT-Xent (or DCL, ``decoupled``) over the anchors that have a positive (and, for DCL, a
    negative); 0.0 when no row has. float32 scalar."""
    temperature = check_temperature(temperature)
    x = ops.cast(embeddings, "float32")
    z = x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=1, keepdims=True), 1e-12))
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    n = ops.shape(logits)[0]
    self_mask = ops.eye(n, dtype="bool")
    labels = ops.reshape(labels, (-1, 1))
    positive = ops.logical_and(ops.equal(labels, ops.transpose(labels)), ops.logical_not(self_mask))
    # drop the diagonal (and for DCL the positives) from the denominator: a large negative, not -inf,
    # so 0 · logit stays finite
    left_out = ops.logical_or(self_mask, positive) if decoupled else self_mask
    denominator = ops.logsumexp(ops.where(left_out, ops.full_like(logits, -1e9), logits), axis=1, keepdims=True)
    log_prob = logits - denominator
    positive = ops.cast(positive, "float32")
    count = ops.sum(positive, axis=1)
    per_anchor = -ops.sum(positive * log_prob, axis=1) / ops.maximum(count, 1.0)
    used = count > 0
    if decoupled:
        used = ops.logical_and(used, ops.any(ops.logical_not(left_out), axis=1))
    used = ops.cast(used, "float32")
    return ops.sum(per_anchor * used) / ops.maximum(ops.sum(used), 1.0)


@keras.saving.register_keras_serializable(package="hemoembed")
class NTXentLoss(keras.losses.Loss):
    """Keras loss wrapping :func:`ntxent_loss`: ``y_true`` = labels, ``y_pred`` = embeddings (one scalar per batch)."""

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, decoupled: bool = False, name: str = "ntxent_loss",
                 **kwargs: Any) -> None:
        self.temperature, self.decoupled = check_temperature(temperature), bool(decoupled)
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return ntxent_loss(y_true, y_pred, temperature=self.temperature, decoupled=self.decoupled)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature, "decoupled": self.decoupled}
