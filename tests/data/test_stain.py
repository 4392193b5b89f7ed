"""Stain jitter in HED space: identity at zero strength, a bounded change otherwise, deterministic seeds."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from hemoembed.data.augment import AugmentConfig, augment_batch, build_augmentation
from hemoembed.data.stain import HED_FROM_RGB, RGB_FROM_HED, StainJitter


def _cells() -> np.ndarray:
    return np.random.default_rng(0).uniform(20, 250, size=(4, 16, 16, 3)).astype(np.float32)


def test_stain_matrices_are_inverse() -> None:
    np.testing.assert_allclose(HED_FROM_RGB @ RGB_FROM_HED, np.eye(3), atol=1e-12)


def test_zero_perturbation_is_the_identity() -> None:
    layer = StainJitter(0.05)
    identity = np.tile(np.array([1, 1, 1, 0, 0, 0], np.float32), (4, 1))
    np.testing.assert_allclose(np.asarray(layer.transform_images(_cells(), identity)), _cells(), atol=0.02)


def test_jitter_changes_colour_within_bounds_and_keeps_dark_darker() -> None:
    layer = StainJitter(0.1)
    x = _cells()
    out = np.asarray(layer.transform_images(x, layer.get_random_transformation(x, seed=5)))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert 0.5 < np.abs(out - x).mean() < 40
    order = np.corrcoef(x.mean(-1).ravel(), out.mean(-1).ravel())[0, 1]
    assert order > 0.95  # brightness structure survives: it is a stain change, not noise


def test_config_adds_the_layer_and_draws_are_seeded() -> None:
    layers = build_augmentation(AugmentConfig(flip=False, rotation=0, zoom=0, translation=0, brightness=0,
                                              contrast=0, saturation=0, hue=0, stain=0.05))
    assert [type(layer).__name__ for layer in layers] == ["StainJitter"]
    a = augment_batch(tf.constant(_cells()), layers, tf.constant([3, 4], tf.int64))
    b = augment_batch(tf.constant(_cells()), layers, tf.constant([3, 4], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
