"""GradCAM++ for the triplet encoder, written natively with ``tf.GradientTape``.

The map is taken on the backbone's last convolutional activation (EfficientNetV2-B0 ``top_activation``,
7×7×1280 at 224 px), found by structure wherever the encoder nests it (an adapter's encoder wraps its source
encoder behind colour layers; the gradients run through those layers too). The target is a scalar computed
from embeddings, so the same code explains
  * a pair: cosine similarity of anchor and positive (what makes them alike) or their L2 distance (what
    makes them differ), one map per image;
  * a triplet: the margin d(a, n) − d(a, p), one map per image of the triplet;
  * a class: a linear SVM's decision value on the (scaled) embedding, one map per image.
Images are decoded and preprocessed exactly as for embedding (:func:`hemoembed.data.preprocess.load_inputs`
with the encoder's record). GradCAM++ (Chattopadhay et al. 2018) weights channel k by
Σ_ij α_kij·relu(∂Y/∂A_kij) with α = g² / (2g² + Σ_ab A_kab·g³) and the map is relu(Σ_k w_k·A_k).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from ..errors import InputError, MismatchError
from ..model.encoder import backbone_chain
from ..model.layers import DihedralViews, undo_dihedral_views

PAIR_TARGETS = ("similarity", "distance")
_EPS = 1e-12


@dataclass
class CamResult:
    """Raw maps at the activation's resolution, the images the network saw, and the explained score."""

    maps: np.ndarray  # (n, h, w) float32, ≥ 0, not normalised
    images: np.ndarray  # (n, S, S, 3) uint8 network inputs (after the encoder's preprocessing)
    score: np.ndarray  # (n,) the target value each map explains (the same value for a pair/triplet)
    target: str

    def upsampled(self) -> np.ndarray:
        """Maps resized (bilinear) to the input size and scaled to [0, 1] per image."""
        size = self.images.shape[1:3]
        maps = tf.image.resize(self.maps[..., None], size, method="bilinear").numpy()[..., 0]
        peak = maps.reshape(len(maps), -1).max(axis=1)
        return np.where(peak[:, None, None] > 0, maps / np.maximum(peak, _EPS)[:, None, None], 0.0)


@dataclass(frozen=True)
class LinearDecision:
    """A linear decision function on embeddings: ((e − mean) / scale) · w + b, one column per class."""

    classes: tuple[str, ...]
    coef: np.ndarray  # (C, D); binary SVMs have one row for classes[1]
    intercept: np.ndarray  # (C,)
    mean: np.ndarray | None = None  # (D,) scaler mean, if the model scales its inputs
    scale: np.ndarray | None = None  # (D,)

    @classmethod
    def from_svm(cls, folder: str | os.PathLike, fingerprint: str | None = None) -> LinearDecision:
        """Read a ``fit-svm`` model folder: its scaler and the SVM's linear scores (skops, checked types).

        LinearSVC gives one-vs-rest rows; a linear SVC (one-vs-one) gives per class the sum of its pairwise
        decision values (the confidence sklearn adds to the votes), both linear in the embedding."""
        from ..tasks.svm import load_svm

        model, _ = load_svm(folder, fingerprint, where="the encoder")
        mean, scale, coef, intercept, pairwise = model.linear_model()
        classes = tuple(str(c) for c in model.classes_)
        n = len(classes)
        if pairwise:
            pairs = [(first, second) for first in range(n) for second in range(first + 1, n)]
            return cls.from_pairs(classes, pairs, coef, intercept, mean, scale)
        return cls(classes, coef, intercept, mean, scale)

    @classmethod
    def from_pairs(cls, classes: Sequence[str], pairs: Sequence[tuple[int, int]], coef: np.ndarray,
                   intercept: np.ndarray, mean: np.ndarray | None = None,
                   scale: np.ndarray | None = None) -> LinearDecision:
        """One-vs-one SVM (pair k = classes (i, j), positive for i) → per class the sum of its pairwise
        decision values: the scores of a libsvm SVC or of the active-learning ``IncrementalLinearSVM``."""
        signs = np.zeros((len(classes), len(pairs)))
        for k, (first, second) in enumerate(pairs):
            signs[first, k], signs[second, k] = 1.0, -1.0  # a positive pairwise value favours the first class
        return cls(tuple(str(c) for c in classes), signs @ np.asarray(coef, np.float64),
                   signs @ np.asarray(intercept, np.float64), mean, scale)

    def numpy_value(self, embeddings: np.ndarray, class_name: str) -> np.ndarray:
        """The same decision value in numpy (for checks and reports)."""
        w, b, sign = self.column(class_name)
        x = np.asarray(embeddings, np.float64)
        if self.mean is not None:
            x = (x - self.mean) / self.scale
        return sign * (x @ w + b)

    def column(self, class_name: str) -> tuple[np.ndarray, float, float]:
        """(w, b, sign) whose decision value is positive when ``class_name`` is predicted."""
        if class_name not in self.classes:
            raise InputError(f"--class {class_name!r} is not one of the model's classes "
                             f"({', '.join(self.classes)})")
        i = self.classes.index(class_name)
        if len(self.coef) == 1:  # binary: one decision value, positive for classes[1]
            return self.coef[0], float(self.intercept[0]), 1.0 if i == 1 else -1.0
        return self.coef[i], float(self.intercept[i]), 1.0

    def tf_value(self, embeddings: tf.Tensor, class_name: str) -> tf.Tensor:
        """(n,) decision values for ``class_name`` as differentiable TensorFlow ops."""
        w, b, sign = self.column(class_name)
        if embeddings.shape[-1] != w.shape[0]:
            raise MismatchError(f"the model expects {w.shape[0]}-d embeddings, the encoder gives "
                                f"{embeddings.shape[-1]}-d")
        x = embeddings
        if self.mean is not None:
            x = (x - tf.constant(self.mean, tf.float32)) / tf.constant(self.scale, tf.float32)
        return sign * (tf.linalg.matvec(x, tf.constant(w, tf.float32)) + b)


def gradcam_plus_plus(activations: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """GradCAM++ maps (n, h, w) from activations and gradients (n, h, w, k)."""
    g2, g3 = tf.square(grads), tf.pow(grads, 3)
    total = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
    denominator = 2.0 * g2 + total * g3
    alpha = g2 / tf.where(tf.abs(denominator) > _EPS, denominator, tf.ones_like(denominator))
    weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))  # (n, k)
    return tf.nn.relu(tf.einsum("nhwk,nk->nhw", activations, weights))


def explain(model: keras.Model, images: np.ndarray, score_fn: Callable[[tf.Tensor], tf.Tensor],
            target: str) -> CamResult:
    """GradCAM++ maps of ``score_fn(embeddings)`` (scalar or (n,)) for every image in ``images``.

    An encoder that averages an image's dihedral views explains each view; its maps are turned back to the
    image's orientation and averaged."""
    before, backbone, after = backbone_chain(model)
    x = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        for layer in before:
            x = layer(x, training=False)
        activations = backbone(x, training=False)
        tape.watch(activations)
        y = activations
        for layer in after:
            y = layer(y, training=False)
        score = score_fn(tf.cast(y, tf.float32))
        total = tf.reduce_sum(score)
    grads = tape.gradient(total, activations)
    activations, grads = tf.cast(activations, tf.float32), tf.cast(grads, tf.float32)
    maps = gradcam_plus_plus(activations, grads)
    if any(isinstance(layer, DihedralViews) for layer in before):  # one map per view: turned back, averaged
        maps = tf.reduce_mean(undo_dihedral_views(maps), axis=0)
    maps = maps.numpy()
    score = np.broadcast_to(np.asarray(score, np.float32), (len(images),)).copy()
    return CamResult(maps, np.clip(np.round(np.asarray(images)), 0, 255).astype(np.uint8), score, target)


def _distance(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """L2 distance, differentiable at zero (the losses' convention)."""
    return tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(a - b)), _EPS))


def explain_pair(model: keras.Model, anchor: np.ndarray, other: np.ndarray, target: str = "similarity") -> CamResult:
    """Maps for both images of a pair: cosine ``similarity`` (alike) or L2 ``distance`` (different)."""
    if target not in PAIR_TARGETS:
        raise InputError(f"pair target {target!r} is not one of {', '.join(PAIR_TARGETS)}")
    if target == "similarity":
        def fn(e):
            return tf.reduce_sum(tf.nn.l2_normalize(e[0]) * tf.nn.l2_normalize(e[1]))
    else:
        def fn(e):
            return _distance(e[0], e[1])
    return explain(model, np.stack([anchor, other]), fn, target)


def explain_triplet(model: keras.Model, anchor: np.ndarray, positive: np.ndarray,
                    negative: np.ndarray) -> CamResult:
    """Maps for anchor, positive and negative of the margin d(a, n) − d(a, p)."""
    return explain(model, np.stack([anchor, positive, negative]),
                   lambda e: _distance(e[0], e[2]) - _distance(e[0], e[1]), "margin")


def explain_class(model: keras.Model, images: np.ndarray, decision: LinearDecision, class_name: str) -> CamResult:
    """One map per image for the decision value of ``class_name``."""
    return explain(model, images, lambda e: decision.tf_value(e, class_name), f"decision:{class_name}")


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] map (same size as ``image``) over an RGB uint8 image with a colour map."""
    from matplotlib import colormaps

    colours = colormaps[colormap](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
