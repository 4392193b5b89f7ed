"""The preprocessing record: versions, the version-1 path kept exactly, version 2's meaning, one path for all."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from helpers import FIXTURES
from PIL import Image

from hemoembed.data.colour import gray_world
from hemoembed.data.imageio import decode_central_crop_tf, decode_rgb_tf, load_image
from hemoembed.data.pipeline import inference_dataset
from hemoembed.data.preprocess import (
    RECORD_VERSION,
    PreprocessingRecord,
    central_crop_tf,
    load_inputs,
    preprocess_bytes_tf,
    preprocess_tf,
)
from hemoembed.errors import InputError


def _smooth_cell(side: int, seed: int = 0, tint=(1.0, 0.85, 1.1)) -> np.ndarray:
    """A smooth, tinted, cell-like RGB image (resampling differences stay small on it, unlike noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    blobs = sum(rng.uniform(0.3, 1.0) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / rng.uniform(0.01, 0.05))
                for cx, cy in rng.uniform(0.2, 0.8, (4, 2)))
    base = 215.0 - 120.0 * blobs / blobs.max()
    return np.clip(np.stack([base * t for t in tint], -1), 0, 255).astype(np.uint8)


def _write(path, image: np.ndarray, **kwargs):
    Image.fromarray(image).save(path, **kwargs)
    return str(path)


def _batches(paths, record, batch_size=4) -> np.ndarray:
    return np.concatenate([x.numpy() for x, _ in inference_dataset(paths, record, batch_size)])


# ------------------------------------------------------------------------------------------------- the record
def test_records_without_a_version_are_version_1_and_keep_their_exact_dict():
    old = {"image_size": 64, "crop_fraction": 0.875, "colour": "grayworld"}  # every encoder saved before #18
    record = PreprocessingRecord.from_dict(old)
    assert record.version == 1 and record.to_dict() == old  # so old fingerprints and stores stay valid
    assert PreprocessingRecord(64).version == RECORD_VERSION == 2
    assert PreprocessingRecord(64).to_dict() == {**old, "version": 2}
    assert PreprocessingRecord.from_dict(PreprocessingRecord(64).to_dict()) == PreprocessingRecord(64)
    with pytest.raises(InputError, match="preprocessing record version 3 is unknown to this hemoembed"):
        PreprocessingRecord.from_dict({**old, "version": 3})
    with pytest.raises(InputError, match="invalid preprocessing record"):
        PreprocessingRecord.from_dict({**old, "version": "two"})


def test_version_is_part_of_the_fingerprint_and_an_old_store_is_refused_by_a_new_record(saved_encoder, tmp_path):
    from hemoembed.errors import MismatchError
    from hemoembed.model.encoder import build_encoder, fingerprint
    from hemoembed.store.store import EmbeddingStore

    model, _ = saved_encoder
    old = build_encoder(PreprocessingRecord(32, version=1), "none")
    old.set_weights(model.get_weights())
    assert fingerprint(old) != fingerprint(model)  # same weights, other preprocessing: another encoder
    store = EmbeddingStore.create(tmp_path / "store", fingerprint(old), PreprocessingRecord(32, version=1), 1280)
    with pytest.raises(MismatchError, match=r"its preprocessing \{.*'version': 2\} differs from the store's"):
        store.check_encoder(fingerprint(model), PreprocessingRecord(32), 1280)


# ------------------------------------------------------------------------------------------------- version 1
def test_version_1_reproduces_inputs_computed_before_versions_existed():
    """``fixtures/preprocess_v1``: three files and their 16-px inputs written by the code at 872a7cf (before
    #18) with the record ``{"image_size": 16, "crop_fraction": 0.875, "colour": ...}``: equal bit for bit."""
    files = [str(FIXTURES / "preprocess_v1" / name) for name in ("smooth.jpg", "noise.png", "small.bmp")]
    expected = np.load(FIXTURES / "preprocess_v1" / "expected.npz")
    for colour in ("grayworld", "none"):
        record = PreprocessingRecord.from_dict({"image_size": 16, "crop_fraction": 0.875, "colour": colour})
        np.testing.assert_array_equal(_batches(files, record), expected[colour])


def test_version_1_is_exactly_the_path_before_versions(tmp_path):
    """Full decode → gray world on the whole image → crop → antialiased bilinear → clip, bit for bit."""
    paths = [_write(tmp_path / "a.jpg", _smooth_cell(90, 1), quality=90),
             _write(tmp_path / "b.png", _smooth_cell(70, 2)),
             _write(tmp_path / "c.jpg", np.random.default_rng(3).integers(0, 256, (60, 80, 3), np.uint8))]
    for colour in ("grayworld", "none"):
        record = PreprocessingRecord(32, 0.875, colour, version=1)
        want = []
        for path in paths:
            x = tf.constant(load_image(path), tf.float32)
            if colour == "grayworld":
                means = tf.reduce_mean(x, axis=[0, 1], keepdims=True)
                x = tf.clip_by_value(x * (tf.reduce_mean(means) / means), 0.0, 255.0)
            x = tf.image.resize(central_crop_tf(x, 0.875), (32, 32), antialias=True)
            want.append(tf.clip_by_value(x, 0.0, 255.0).numpy())
        np.testing.assert_array_equal(_batches(paths, record), np.stack(want))
        np.testing.assert_array_equal(load_inputs(paths, record), np.stack(want))


# ------------------------------------------------------------------------------------------------- version 2
@pytest.mark.parametrize("side,size,scale", [(256, 224, 1), (256, 128, 1), (256, 64, 2), (256, 32, 4),
                                             (256, 16, 8), (146, 64, 2), (144, 64, 1), (40, 64, 1)])
def test_jpegs_decode_only_the_crop_at_the_coarsest_scale_that_keeps_it(side, size, scale):
    data = io.BytesIO()
    Image.fromarray(_smooth_cell(side)).save(data, format="JPEG", quality=95)
    data = tf.constant(data.getvalue())
    crop = decode_central_crop_tf(data, 0.875, size).numpy()
    scaled = -(-side // scale)  # libjpeg rounds up
    assert crop.shape == (round(scaled * 0.875),) * 2 + (3,)
    assert crop.shape[0] >= size or scale == 1  # never below the target size (unless the image is smaller)
    assert scale == 8 or round(-(-side // (2 * scale)) * 0.875) < size  # and the next scale would be
    assert decode_central_crop_tf(data, 0.875).shape[0] == round(side * 0.875)  # no target size: full scale
    # the crop window is the central crop of the scaled image: equal inside, a few levels along its edge
    whole = tf.io.decode_jpeg(data, channels=3, ratio=scale).numpy()
    top = (scaled - crop.shape[0]) // 2
    diff = np.abs(crop.astype(int) - whole[top:top + crop.shape[0], top:top + crop.shape[0]])
    assert diff[2:-2, 2:-2].max() <= 1 and diff.mean() < 0.2


def test_version_2_means_crop_resize_then_gray_world_of_what_the_encoder_sees(tmp_path):
    image = _smooth_cell(120, 4, tint=(1.1, 0.8, 1.0))
    path = _write(tmp_path / "cell.png", image)
    record = PreprocessingRecord(48, 0.8)
    crop = image[12:108, 12:108]  # 96 px: the central 0.8
    resized = tf.image.resize(crop, (48, 48), method="area").numpy()  # 2x shrink: exact 2x2 means
    np.testing.assert_allclose(resized, crop.reshape(48, 2, 48, 2, 3).mean(axis=(1, 3)), atol=1e-3)
    want = gray_world(resized.astype(np.float64))
    got = _batches([path], record)[0]
    np.testing.assert_allclose(got, want, atol=1e-3)
    np.testing.assert_allclose(got.mean(axis=(0, 1)), got.mean(), atol=0.05)  # gray: equal channel means
    # enlarging (an image smaller than the record): bilinear, then the same colour step
    small = _write(tmp_path / "small.png", _smooth_cell(30, 5))
    up = tf.image.resize(load_image(small)[3:27, 3:27], (48, 48), method="bilinear").numpy()
    np.testing.assert_allclose(_batches([small], record)[0], gray_world(up.astype(np.float64)), atol=1e-3)


def test_one_path_batched_single_and_every_loader_agree(tmp_path):
    paths = [_write(tmp_path / f"c{i}.jpg", _smooth_cell(100 + 30 * i, i), quality=92) for i in range(5)]
    paths.append(_write(tmp_path / "c5.bmp", _smooth_cell(64, 9)))
    paths.append(_write(tmp_path / "c6.gif", _smooth_cell(50, 10)))  # Pillow's branch, cropped after decoding
    for record in (PreprocessingRecord(32), PreprocessingRecord(48, 1.0, "none")):
        batched = _batches(paths, record, batch_size=4)
        single = np.stack([preprocess_bytes_tf(tf.io.read_file(p), record).numpy() for p in paths])
        np.testing.assert_allclose(batched, single, atol=1e-4)
        np.testing.assert_allclose(load_inputs(paths, record), batched, atol=1e-4)
        assert batched.shape == (7, record.image_size, record.image_size, 3) and batched.dtype == np.float32
        assert 0.0 <= batched.min() and batched.max() <= 255.0


def test_load_inputs_names_the_file_that_cannot_be_used(tmp_path):
    good = _write(tmp_path / "good.png", _smooth_cell(40))
    noisy = np.random.default_rng(0).integers(0, 256, (120, 120, 3), np.uint8)
    data = open(_write(tmp_path / "x.jpg", noisy), "rb").read()
    (tmp_path / "broken.jpg").write_bytes(data[:len(data) // 2])  # a whole header: only decoding finds it
    with pytest.raises(InputError, match="broken.jpg: cannot decode image"):
        load_inputs([good, str(tmp_path / "broken.jpg")], PreprocessingRecord(32))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="notes.png: not an image"):
        load_inputs([str(tmp_path / "notes.png")], PreprocessingRecord(32))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("crop_scale", [None, (1.0, 1.0)])
@pytest.mark.parametrize("fmt, side", [("png", 96), ("jpeg", 256)])
def test_training_sees_an_image_as_embedding_does(tmp_path, version, crop_scale, fmt, side):
    """Two-view training batches with augmentation off equal the inference inputs up to resampling: the
    record's colour step (its gray-world region) and resampling filter are the same in both, whether the
    record's fixed crop or a random-resized crop (the scratch preset; here of the whole region) makes the
    encoder's input, and when inference decodes a JPEG at a DCT scale (256 px, 48 px input: 1/4)."""
    from hemoembed.data.augment import AugmentConfig
    from hemoembed.data.pipeline import multi_view_dataset

    paths = []
    for i in range(4):
        image = _smooth_cell(side, i, tint=(1.15, 0.8, 1.0))
        image[:side // 24] = (40, 60, 230)  # a blue band outside the central crop: moves whole-image means only
        paths.append(_write(tmp_path / f"c{i}.{fmt}", image, **({"quality": 95} if fmt == "jpeg" else {})))
    record = PreprocessingRecord(48, 0.875, version=version)
    off = AugmentConfig(flip=False, rotation=0, zoom=0, translation=0, brightness=0, contrast=0, saturation=0, hue=0,
                        crop_scale=crop_scale, crop_ratio=(1.0, 1.0))
    views, _ = next(iter(multi_view_dataset(paths, range(4), record, off, 4, seed=0, stream=0, shuffle=False)))
    train, infer = views.numpy()[0::2], _batches(paths, record)
    assert np.abs(train - infer).mean() < 2.5  # two resamplings in training, one at inference
    np.testing.assert_allclose(train.mean(axis=(1, 2)), infer.mean(axis=(1, 2)), atol=0.6)


def test_preprocess_tf_without_crop_takes_version_2_means_from_the_crop():
    image = np.full((40, 40, 3), (200, 100, 50), np.uint8)
    image[:5] = (0, 0, 255)  # a blue border outside the central crop
    inner = preprocess_tf(image, PreprocessingRecord(32, 0.75), crop=False).numpy()
    np.testing.assert_allclose(inner[20, 20], [350 / 3] * 3, atol=1e-3)  # the crop is balanced exactly
    whole = preprocess_tf(image, PreprocessingRecord(32, 0.75, version=1), crop=False).numpy()
    assert np.abs(whole[20, 20] - 350 / 3).max() > 5  # version 1: the border moves the means


@pytest.mark.realdata
def test_pbc_jpegs_at_64_px_decode_at_half_scale_close_to_a_full_decode(shared_data):
    files = sorted((shared_data / "pbc256" / "PBC_dataset_normal_DIB" / "neutrophil").glob("*.jpg"))[:8]
    for path in files:
        data = tf.io.read_file(str(path))
        crop = decode_central_crop_tf(data, 0.875, 64)
        assert tuple(crop.shape) == (112, 112, 3)  # 1/2 scale: 128 px, central 112
        reference = tf.image.resize(decode_rgb_tf(data).numpy()[16:240, 16:240], (64, 64), method="area").numpy()
        assert np.abs(tf.image.resize(crop, (64, 64), method="area").numpy() - reference).mean() < 2.0
