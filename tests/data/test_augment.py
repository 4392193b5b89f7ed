"""Augmentation layers and the two-view training pipeline (small synthetic images, no model)."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from hemoembed.data.augment import AugmentConfig, ColourJitter, augment_batch, build_augmentation
from hemoembed.data.manifest import load_manifest
from hemoembed.data.pipeline import augmentation_side, cache_training_images, holdout_split, multi_view_dataset
from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.data.synthetic import make_synthetic_dataset
from hemoembed.errors import InputError


def _jitter(images, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0):
    factors = tf.constant([[brightness, contrast, saturation, hue]] * len(images), tf.float32)
    return ColourJitter().transform_images(tf.constant(images, tf.float32), factors).numpy()


def test_colour_jitter_identity_brightness_saturation_and_hue_circle():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(_jitter(images), images, atol=1e-3)
    np.testing.assert_allclose(_jitter(images, brightness=0.5), images * 0.5, atol=1e-3)
    grey = _jitter(images, saturation=0.0)
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-3)
    np.testing.assert_allclose(grey[..., 1], grey[..., 2], atol=1e-3)
    red = np.zeros((1, 4, 4, 3), np.float32)
    red[..., 0] = 255.0
    # hue is a fraction of the colour circle: +0.5 turns red into cyan, +1/3 into green
    np.testing.assert_allclose(_jitter(red, hue=0.5)[0, 0, 0], [0, 255, 255], atol=1e-2)
    np.testing.assert_allclose(_jitter(red, hue=1 / 3)[0, 0, 0], [0, 255, 0], atol=1e-2)


def test_colour_jitter_factor_ranges_and_serialisation():
    layer = ColourJitter(0.2, 0.1, 0.3, 0.05)
    factors = layer.get_random_transformation(tf.zeros((500, 2, 2, 3)), seed=keras.random.SeedGenerator(1)).numpy()
    low, high = factors.min(axis=0), factors.max(axis=0)
    np.testing.assert_array_less([0.8, 0.9, 0.7, -0.05], low + 1e-6)
    np.testing.assert_array_less(high, [1.2 + 1e-6, 1.1 + 1e-6, 1.3 + 1e-6, 0.05 + 1e-6])
    assert high[0] - low[0] > 0.35  # really spread over the range
    clone = ColourJitter.from_config(layer.get_config())
    assert (clone.brightness, clone.contrast, clone.saturation, clone.hue) == (0.2, 0.1, 0.3, 0.05)


def test_augment_batch_is_seeded_per_image_and_uses_independent_flips():
    layers = build_augmentation(AugmentConfig())
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds == ["RandomFlip", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "ColourJitter"]
    assert {layers[0].mode, layers[1].mode} == {"horizontal", "vertical"}
    assert layers[2].factor == (-0.25, 0.25)  # ±90°
    image = np.random.default_rng(1).uniform(0, 255, (1, 24, 24, 3)).astype(np.float32)
    batch = tf.constant(np.repeat(image, 4, axis=0))
    a = augment_batch(batch, layers, tf.constant([3, 5], tf.int64)).numpy()
    b = augment_batch(batch, layers, tf.constant([3, 5], tf.int64)).numpy()
    c = augment_batch(batch, layers, tf.constant([3, 6], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0
    assert min(np.abs(a[i] - a[j]).mean() for i in range(4) for j in range(i)) > 1.0  # each image its own draw
    assert a.min() >= 0 and a.max() <= 255


def test_augment_config_is_validated():
    with pytest.raises(InputError, match="hue"):
        AugmentConfig(hue=0.6)
    with pytest.raises(InputError, match="zoom"):
        AugmentConfig(zoom=1.5)


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    make_synthetic_dataset(root, n_per_class=4, sites=1, size=40, seed=3)
    return load_manifest(root / "manifest.csv").absolute()


def _epoch(paths, stream, **kwargs):
    record = PreprocessingRecord(32, 0.875)
    ds = multi_view_dataset(paths, range(len(paths)), record, AugmentConfig(), 6, seed=1, stream=stream, **kwargs)
    return [(v.numpy(), y.numpy()) for v, y in ds]


def test_two_view_batches_pair_views_of_distinct_images_reproducibly(cells):
    first = _epoch(cells, stream=1)
    assert len(first) == len(cells) // 6  # drop_remainder: whole batches only
    for views, labels in first:
        assert views.shape == (12, 32, 32, 3) and views.dtype == np.float32
        np.testing.assert_array_equal(labels[0::2], labels[1::2])  # rows 2k, 2k+1: one image
        assert len(set(labels[0::2].tolist())) == 6  # distinct images
        assert np.abs(views[0::2] - views[1::2]).mean() > 1.0  # independently augmented
    again = _epoch(cells, stream=1)
    for (v1, y1), (v2, y2) in zip(first, again):
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(y1, y2)
    other = _epoch(cells, stream=2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))  # a new order per epoch


def test_cached_images_give_the_same_batches(cells):
    record = PreprocessingRecord(32, 0.875)
    cache, kept = cache_training_images(cells, record)
    assert kept == list(range(len(cells)))
    assert tuple(cache.shape) == (len(cells), augmentation_side(record), augmentation_side(record), 3)
    plain, cached = _epoch(cells, stream=4), _epoch(cells, stream=4, cache=cache)
    for (v1, y1), (v2, y2) in zip(plain, cached):
        np.testing.assert_array_equal(y1, y2)
        assert np.abs(v1 - v2).max() < 2.5  # the cache stores uint8: rounding only


def test_holdout_split_is_disjoint_seeded_and_sized():
    train, val = holdout_split(100, 0.1, seed=0)
    assert len(val) == 10 and sorted(train + val) == list(range(100))
    assert holdout_split(100, 0.1, seed=0) == (train, val)
    assert holdout_split(100, 0.1, seed=1)[1] != val


def test_random_resized_crop_boxes_stay_in_the_region_with_the_drawn_area():
    from hemoembed.data.augment import RandomResizedCrop

    layer = RandomResizedCrop(16, scale=(0.3, 1.0), ratio=(0.75, 4 / 3), region=0.875)
    boxes = layer.get_random_transformation(tf.zeros((2000, 20, 20, 3)), seed=keras.random.SeedGenerator(3)).numpy()
    start, end = (1 - 0.875) / 2, 1 - (1 - 0.875) / 2
    assert boxes.min() >= start - 1e-6 and boxes.max() <= end + 1e-6
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 0.875**2
    assert area.min() >= 0.3 * 0.75 - 1e-6 and area.max() <= 1.0 + 1e-6  # clipped at the region's edge
    assert 0.55 < np.median(area) < 0.7  # uniform in [0.3, 1] before clipping: median 0.65
    out = layer.transform_images(tf.ones((3, 20, 20, 3)), boxes[:3])
    assert tuple(out.shape) == (3, 16, 16, 3)


def test_random_resized_crop_at_full_scale_is_the_central_crop():
    from hemoembed.data.augment import RandomResizedCrop

    layer = RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), region=0.5)
    boxes = layer.get_random_transformation(tf.zeros((4, 16, 16, 3)), seed=keras.random.SeedGenerator(0)).numpy()
    np.testing.assert_allclose(boxes, [[0.25, 0.25, 0.75, 0.75]] * 4, atol=1e-6)
    image = np.zeros((1, 16, 16, 3), np.float32)
    image[:, 4:12, 4:12] = 200.0  # a bright square exactly filling the central half
    out = layer.transform_images(tf.constant(image), boxes[:1]).numpy()
    assert out.mean() > 150  # the crop shows (almost only) the central square


def test_more_views_of_every_image_share_its_label_and_differ(cells):
    """``views=3``: rows 3k .. 3k + 2 are three independently augmented views of image k (two positives per
    anchor for NT-Xent); the same epoch is drawn again identically."""
    first = _epoch(cells, stream=1, views=3)
    assert len(first) == len(cells) // 6
    for views, labels in first:
        assert views.shape == (18, 32, 32, 3)
        groups = labels.reshape(6, 3)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 6
        trio = views.reshape(6, 3, 32, 32, 3)
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert np.abs(trio[:, a] - trio[:, b]).mean() > 1.0
    again = _epoch(cells, stream=1, views=3)
    for (v1, y1), (v2, y2) in zip(first, again):
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(y1, y2)
    # the image order is the epoch's, whatever the number of views
    two = _epoch(cells, stream=1)
    assert [y[0::2].tolist() for _, y in two] == [y[0::3].tolist() for _, y in first]


def test_crop_scale_replaces_the_records_crop_in_the_two_view_pipeline(tmp_path):
    make_synthetic_dataset(tmp_path, n_per_class=2, sites=1, size=40, seed=0)
    paths = load_manifest(tmp_path).absolute()
    record = PreprocessingRecord(24, 0.875, "grayworld")
    config = AugmentConfig(zoom=0, translation=0, crop_scale=(0.3, 1.0), hue=0.05)
    views, labels = next(iter(multi_view_dataset(paths, range(len(paths)), record, config, 4, seed=0, stream=1)))
    assert tuple(views.shape) == (8, 24, 24, 3) and labels.numpy().tolist()[:2] == [labels[0]] * 2
    again, _ = next(iter(multi_view_dataset(paths, range(len(paths)), record, config, 4, seed=0, stream=1)))
    np.testing.assert_array_equal(views.numpy(), again.numpy())
    assert np.abs(views.numpy()[0] - views.numpy()[1]).mean() > 1.0  # the two views differ


@pytest.mark.parametrize("value, message", [((0.0, 1.0), "crop scale"), ((0.5, 0.3), "crop scale"),
                                            ((0.3, 1.5), "crop scale"), ("abc", "crop scale")])
def test_bad_crop_scale_is_one_line(value, message):
    with pytest.raises(InputError, match=message):
        AugmentConfig(crop_scale=value)
    assert AugmentConfig(crop_scale="none").crop_scale is None
