"""Colour normalisation: gray world and Reinhard lαβ transfer, numpy vs TensorFlow parity."""
from __future__ import annotations

import ast
import json
import warnings
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from hemoembed.data import colour
from hemoembed.data.colour import (
    ReinhardReference,
    gray_world,
    gray_world_tf,
    image_lab_stats,
    lab_to_rgb,
    reinhard_normalize,
    reinhard_normalize_tf,
    rgb_to_lab,
)
from hemoembed.errors import InputError


def smooth_image(seed: int, size: int = 48, lo: float = 60.0, hi: float = 200.0) -> np.ndarray:
    """A smooth float64 RGB image in [lo, hi]: a few random sinusoids per channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        wave = sum(
            np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy) + rng.uniform(0, 6))
            for _ in range(3)
        )
        wave = (wave - wave.min()) / (wave.max() - wave.min())
        a, b = np.sort(rng.uniform(lo, hi, size=2))
        channels.append(a + (b - a) * wave)
    return np.stack(channels, axis=-1)


def cast_image(seed: int, gains=(1.0, 0.7, 1.3)) -> np.ndarray:
    """A uint8 image with a colour cast and no saturation (max 40..120 × 1.3 < 255)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 120, size=(32, 40, 1))
    noise = rng.uniform(-10, 10, size=(32, 40, 3))
    return np.rint((base + noise) * np.asarray(gains)).astype(np.uint8)


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


REF = ReinhardReference(mean=(-0.45, 0.03, 0.01), std=(0.12, 0.02, 0.015))


# ----------------------------------------------------------------------------- gray world


def test_gray_world_equalises_channel_means_uint8():
    image = cast_image(0)
    means_in = image.reshape(-1, 3).mean(axis=0)
    assert means_in.max() - means_in.min() > 30  # a real cast to remove
    out = gray_world(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    means_out = out.reshape(-1, 3).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(means_out, means_in.mean(), atol=1.0)
    # uint8 output is the float result rounded to nearest (not truncated)
    assert np.array_equal(out, np.rint(gray_world(image.astype(np.float64))).astype(np.uint8))


def test_gray_world_float_is_exact_and_keeps_dtype():
    image = cast_image(1).astype(np.float64) + 0.25
    out = gray_world(image)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), image.mean(), rtol=1e-12)
    out32 = gray_world(image.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32.reshape(-1, 3).mean(axis=0), image.mean(), rtol=1e-5)


def test_gray_world_clips_to_valid_range():
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 250  # red far above the overall mean; blue tiny → big gain
    image[..., 1] = 120
    image[:4, :, 2] = 2
    image[4:, :, 2] = 200
    out = gray_world(image)
    assert out.dtype == np.uint8
    assert out[4:, :, 2].max() == 255  # 200 × gain > 255 saturates instead of wrapping
    out_f = gray_world(image.astype(np.float32))
    assert out_f.max() <= 255.0 and out_f.min() >= 0.0


def test_gray_world_zero_channel_stays_zero_and_finite(tf):
    image = cast_image(2)
    image[..., 2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero on the way
        out = gray_world(image)
    assert np.all(out[..., 2] == 0)
    overall = image.astype(np.float64).mean()  # mean over all three channels, blue included
    np.testing.assert_allclose(out[..., :2].reshape(-1, 2).mean(axis=0), overall, atol=1.0)
    x = tf.constant(image.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out_tf = gray_world_tf(x)
        total = tf.reduce_sum(out_tf)
    grad = tape.gradient(total, x).numpy()
    out_tf = out_tf.numpy()
    assert np.all(np.isfinite(out_tf)) and np.all(out_tf[..., 2] == 0)
    assert np.all(np.isfinite(grad))  # the guarded division is also safe to differentiate
    black = np.zeros((4, 4, 3), np.float32)
    assert np.all(gray_world(black) == 0)
    assert np.all(gray_world_tf(black).numpy() == 0)


def test_gray_world_rejects_non_rgb():
    with pytest.raises(InputError, match="shape"):
        gray_world(np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="dtype"):
        gray_world(np.zeros((8, 8, 3), np.int64))


# ----------------------------------------------------------------------------- lαβ conversion


def test_lab_known_values():
    """Pinned lαβ of white and pure red (Reinhard matrix, log10, orthogonal decorrelation)."""
    lab = rgb_to_lab(np.array([[255.0, 255.0, 255.0], [255.0, 0.0, 0.0]]))
    np.testing.assert_allclose(lab[0], [-9.538093e-4, 7.636271e-4, 9.217847e-5], rtol=1e-5)
    np.testing.assert_allclose(lab[1], [-1.58375241, 0.86173426, 0.20310553], rtol=1e-7)


def test_lab_round_trip_below_one_level_including_black():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    image[:3] = 0  # pure black rows: the only pixels whose LMS is floored
    image[3, :, 1:] = 0  # pure red-only pixels, not floored
    back = lab_to_rgb(rgb_to_lab(image))
    err = np.abs(back - image)
    assert err.max() < 0.02  # far below 1/255 of full scale: black comes back at ~1/64 level
    assert err[3:].max() < 1e-9  # everything but black is exact
    assert np.array_equal(np.rint(back).astype(np.uint8), image)


# ----------------------------------------------------------------------------- Reinhard


@pytest.mark.parametrize("as_uint8", [False, True])
def test_reinhard_output_statistics_match_reference(as_uint8):
    source = smooth_image(4, lo=90, hi=230)
    reference = ReinhardReference(*image_lab_stats(smooth_image(5, lo=40, hi=180)))
    mean_in, std_in = image_lab_stats(source)
    assert np.abs(mean_in - reference.mean).max() > 0.1  # there is something to transfer
    assert np.abs(std_in - reference.std).max() > 0.03
    image = np.rint(source).astype(np.uint8) if as_uint8 else source
    out = reinhard_normalize(image, reference)
    assert out.dtype == image.dtype and out.shape == image.shape
    mean_out, std_out = image_lab_stats(out)
    np.testing.assert_allclose(mean_out, reference.mean, atol=0.02)
    np.testing.assert_allclose(std_out, reference.std, atol=0.02)


def test_reinhard_image_at_reference_is_unchanged():
    image = np.rint(smooth_image(6)).astype(np.uint8)
    reference = ReinhardReference(*image_lab_stats(image))
    out = reinhard_normalize(image, reference)
    diff = np.abs(out.astype(np.int16) - image.astype(np.int16))
    assert diff.mean() < 1.0 and diff.max() <= 1
    # uint8 output is the float output rounded to nearest
    as_float = reinhard_normalize(image.astype(np.float64), reference)
    assert np.array_equal(out, np.rint(as_float).astype(np.uint8))


def test_reinhard_constant_and_gray_images_are_finite(tf):
    constant = np.full((16, 16, 3), (200.0, 90.0, 140.0))
    out = reinhard_normalize(constant, REF)
    assert np.all(np.isfinite(out))
    # Every lαβ channel is flat: only shifted, so the result is the reference mean colour.
    expected = np.clip(lab_to_rgb(np.asarray(REF.mean)), 0, 255)
    np.testing.assert_allclose(out.reshape(-1, 3), np.broadcast_to(expected, (256, 3)), atol=1e-6)
    gray = np.repeat(np.linspace(30, 220, 256).reshape(16, 16, 1), 3, axis=-1)  # α, β flat
    for image in (constant, gray, np.zeros((16, 16, 3))):
        assert np.all(np.isfinite(reinhard_normalize(image, REF)))
        assert np.all(np.isfinite(reinhard_normalize(image.astype(np.uint8), REF)))
        out_tf = reinhard_normalize_tf(image.astype(np.float32), REF.mean, REF.std).numpy()
        assert np.all(np.isfinite(out_tf))
        assert np.abs(out_tf - reinhard_normalize(image, REF)).max() <= 1.0


def test_reinhard_rejects_bad_reference():
    with pytest.raises(InputError, match="ReinhardReference"):
        reinhard_normalize(np.zeros((4, 4, 3)), {"mean": REF.mean, "std": REF.std})
    with pytest.raises(InputError, match="positive"):
        ReinhardReference(mean=(0, 0, 0), std=(0.1, 0.0, 0.1))


# ----------------------------------------------------------------------------- numpy vs TensorFlow


def _batch() -> np.ndarray:
    rng = np.random.default_rng(7)
    smooth = [smooth_image(10 + i, size=32, lo=20, hi=240) for i in range(3)]
    noisy = rng.integers(0, 256, size=(32, 32, 3)).astype(np.float64)
    return np.stack(smooth + [noisy]).astype(np.float32)


def test_numpy_and_tf_agree_single_and_batched(tf):
    batch = _batch()
    worst = 0.0
    for image in batch:  # single images, numpy per image
        worst = max(worst, np.abs(gray_world_tf(image).numpy() - gray_world(image)).max())
        got = reinhard_normalize_tf(image, REF.mean, REF.std).numpy()
        worst = max(worst, np.abs(got - reinhard_normalize(image, REF)).max())
    want_gw = np.stack([gray_world(im) for im in batch])
    want_rh = np.stack([reinhard_normalize(im, REF) for im in batch])
    assert np.abs(gray_world_tf(tf.constant(batch)).numpy() - want_gw).max() <= 1.0
    assert np.abs(reinhard_normalize_tf(batch, REF.mean, REF.std).numpy() - want_rh).max() <= 1.0
    assert worst <= 1.0
    # uint8 numpy output (rounded) is within one level of the float TF output too
    as_uint8 = np.rint(batch[0]).astype(np.uint8)
    got = reinhard_normalize_tf(as_uint8.astype(np.float32), REF.mean, REF.std).numpy()
    assert np.abs(got - reinhard_normalize(as_uint8, REF)).max() <= 1.0


def test_tf_versions_compile_with_xla(tf):
    batch = tf.constant(_batch())
    mean, std = tf.constant(REF.mean), tf.constant(REF.std)
    gw = tf.function(gray_world_tf, jit_compile=True)(batch).numpy()
    rh = tf.function(reinhard_normalize_tf, jit_compile=True)(batch, mean, std).numpy()
    assert gw.dtype == np.float32 and rh.dtype == np.float32 and rh.shape == batch.shape
    assert np.abs(gw - gray_world(batch.numpy())).max() <= 1.0
    assert np.abs(rh - reinhard_normalize(batch.numpy(), REF)).max() <= 1.0


def test_tensorflow_is_imported_only_inside_the_tf_functions():
    """numpy users of the module do not pay the TensorFlow import (the package itself may)."""
    tree = ast.parse(Path(colour.__file__).read_text())
    top_level = [
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [None])
    ]
    assert top_level and not any(name.split(".")[0] in ("tensorflow", "keras") for name in top_level)
    lazy = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(n, ast.Import) and n.names[0].name == "tensorflow" for n in ast.walk(node))
    }
    assert lazy == {"gray_world_tf", "reinhard_normalize_tf"}


# ----------------------------------------------------------------------------- reference files


def test_reference_json_and_dict_round_trip(tmp_path):
    reference = ReinhardReference(mean=(-0.512345678901, 0.0123, -0.004), std=(0.2, 0.031, 0.0075))
    path = tmp_path / "ref.json"
    reference.to_json(path)
    assert json.loads(path.read_text())["std"] == [0.2, 0.031, 0.0075]
    assert ReinhardReference.from_json(path) == reference
    assert ReinhardReference.from_dict(reference.to_dict()) == reference
    assert isinstance(ReinhardReference.from_json(path).mean, tuple)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read"),
        ('{"mean": [0, 0, 0]}', "missing: std"),
        ('{"mean": [0, 0, 0], "std": [1, 1, 1], "sd": 1}', "unknown: sd"),
        ('{"mean": [0, 0, 0], "std": [1, 0, 1]}', "positive"),
        ('{"mean": [0, 0], "std": [1, 1, 1]}', "three"),
        ('{"mean": [0, 0, 0], "std": [1, 1, 1], "space": "cielab"}', "cielab"),
        ("[1, 2, 3]", "mapping"),
    ],
)
def test_corrupt_reference_file_names_the_file(tmp_path, content, message):
    path = tmp_path / "site_ref.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        ReinhardReference.from_json(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_reference_file_names_the_file(tmp_path):
    with pytest.raises(InputError, match="nowhere.json.*not found"):
        ReinhardReference.from_json(tmp_path / "nowhere.json")


# ----------------------------------------------------------------------------- from_images


class RecordingImages(Sequence):
    """A lazy image list that records which positions were read."""

    def __init__(self, images):
        self.images, self.read = images, []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.read.append(index)
        return self.images[index]


@pytest.fixture(scope="module")
def images():
    return [
        np.rint(smooth_image(100 + i, size=16, lo=10 + 5 * i, hi=150 + 5 * i)).astype(np.uint8)
        for i in range(12)
    ]


def test_from_images_averages_per_image_statistics(images):
    stats = [image_lab_stats(im) for im in images]
    reference = ReinhardReference.from_images(images)
    np.testing.assert_allclose(reference.mean, np.mean([m for m, _ in stats], axis=0), rtol=1e-12)
    np.testing.assert_allclose(reference.std, np.mean([s for _, s in stats], axis=0), rtol=1e-12)
    pooled = rgb_to_lab(np.stack(images)).reshape(-1, 3).std(axis=0)
    assert reference.std[0] < pooled[0] - 0.01  # not the pooled-pixel std


def test_from_images_sample_is_bounded_and_deterministic(images):
    first, again, other = RecordingImages(images), RecordingImages(images), RecordingImages(images)
    ref = ReinhardReference.from_images(first, sample=4, seed=3)
    assert ReinhardReference.from_images(again, sample=4, seed=3) == ref
    ReinhardReference.from_images(other, sample=4, seed=4)
    assert len(first.read) == 4 and len(set(first.read)) == 4
    assert first.read == again.read and first.read != other.read
    assert ref == ReinhardReference.from_images([images[i] for i in first.read])
    # a one-pass iterable (generator) samples by reservoir: same bound, same determinism
    gen_ref = ReinhardReference.from_images((im for im in images), sample=4, seed=3)
    assert gen_ref == ReinhardReference.from_images(iter(images), sample=4, seed=3)
    assert gen_ref != ReinhardReference.from_images(iter(images), sample=4, seed=4)
    stats = [np.concatenate(image_lab_stats(im)) for im in images]
    candidates = [np.mean([stats[j] for j in idx], axis=0) for idx in combinations(range(12), 4)]
    got = np.concatenate([gen_ref.mean, gen_ref.std])
    assert any(np.allclose(got, c, rtol=1e-12) for c in candidates)  # some 4 of the 12
    # sample ≥ number of images uses them all
    assert ReinhardReference.from_images(iter(images), sample=50) == ReinhardReference.from_images(images)


def test_from_images_bad_input(images):
    with pytest.raises(InputError, match="no images"):
        ReinhardReference.from_images([])
    with pytest.raises(InputError, match="no images"):
        ReinhardReference.from_images(iter([]))
    with pytest.raises(InputError, match="#1"):
        ReinhardReference.from_images([images[0], np.zeros((8, 8))])
    with pytest.raises(InputError, match="sample"):
        ReinhardReference.from_images(images, sample=0)
