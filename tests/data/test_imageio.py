"""The single decoding path: every supported format → RGB uint8, and bad files are named, not crashed on."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import encoded_cell, full_decode_error
from PIL import Image

from hemoembed.data.imageio import MAX_PIXELS, load_image, probe
from hemoembed.errors import InputError


@pytest.mark.parametrize("fmt,mode,ext", [
    ("PNG", "RGB", "png"), ("BMP", "RGB", "bmp"), ("TIFF", "RGB", "tif"), ("PNG", "L", "png"),
    ("PNG", "RGBA", "png"), ("PNG", "P", "png"), ("GIF", "P", "gif"), ("TIFF", "L", "tiff"),
])
def test_lossless_formats_decode_exactly_to_rgb(tmp_path, fmt, mode, ext):
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"cell.{ext}"
    source.save(path, format=fmt)
    image = load_image(path)
    assert image.shape == (30, 41, 3) and image.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(image, expected)


def test_jpeg_decodes_close_to_source(tmp_path):
    smooth = np.clip(np.add.outer(np.arange(48), np.arange(48))[..., None] * [2, 3, 1], 0, 255).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    image = load_image(tmp_path / "a.jpg")
    assert image.shape == (48, 48, 3)
    assert np.abs(image.astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("ext", ["tif", "png"])
def test_16bit_grayscale_is_scaled_not_clipped(tmp_path, ext):
    ramp = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / f"deep.{ext}")
    image = load_image(tmp_path / f"deep.{ext}")
    expected = np.round(ramp / 65535 * 255)
    assert np.abs(image[..., 0].astype(int) - expected).max() <= 1
    assert image[..., 0].max() == 255 and image[..., 0].min() == 0


def test_truncated_empty_and_non_images_are_named(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(tmp_path / "ok.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:200])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image at all")
    assert probe(tmp_path / "ok.jpg", full=True).ok
    assert "truncated" in probe(tmp_path / "cut.jpg", full=True).error
    assert probe(tmp_path / "empty.png").error == "empty file"
    assert "not an image" in probe(tmp_path / "notes.png").error
    with pytest.raises(InputError, match="notes.png: not an image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(InputError, match="missing.png: unreadable"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    side = int(np.sqrt(MAX_PIXELS)) + 100
    Image.new("L", (side, side)).save(tmp_path / "bomb.png", optimize=True)
    info = probe(tmp_path / "bomb.png")
    assert "decompression bomb" in info.error and info.width == side
    with pytest.raises(InputError, match="bomb.png: too many pixels"):
        load_image(tmp_path / "bomb.png")


def test_probe_hashes_bytes(tmp_path):
    import hashlib

    Image.fromarray(np.full((20, 20, 3), 7, np.uint8)).save(tmp_path / "a.png")
    info = probe(tmp_path / "a.png")
    assert info.sha256 == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    assert (info.width, info.height, info.format) == (20, 20, "PNG")


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif"),
                                     ("TIFF", "tif")])
def test_the_decoder_itself_refuses_a_header_over_the_pixel_limit(tmp_path, monkeypatch, fmt, ext):
    """Every format, on the unprobed path too (tf.data pipeline, eager decode): refused before decoding."""
    import tensorflow as tf

    from hemoembed.data import imageio
    from hemoembed.data.pipeline import decoded_dataset

    path = tmp_path / f"cell.{ext}"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path, format=fmt)
    data = tf.constant(path.read_bytes())
    assert imageio.decode_rgb_tf(data).shape == (40, 50, 3)
    assert [int(i) for _, i in decoded_dataset([str(path)])] == [0]
    monkeypatch.setattr(imageio, "MAX_PIXELS", 40 * 50 - 1)
    # eagerly, the Pillow path (GIF, TIFF) raises its own ValueError
    errors = (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError)
    with pytest.raises(errors, match="decompression bomb"):
        imageio.decode_rgb_tf(data)
    assert list(decoded_dataset([str(path)])) == []  # dropped in the pipeline, never decoded


def test_a_real_bomb_is_never_decoded_by_the_pipeline(tmp_path, png_bomb):
    """8000 x 8000 PNG of a few hundred KB: the header check stops it (decoding would take 192 MB)."""
    import tensorflow as tf

    from hemoembed.data.imageio import decode_rgb_tf

    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(8000))
    assert path.stat().st_size < 400_000
    with pytest.raises(tf.errors.InvalidArgumentError, match="decompression bomb"):
        decode_rgb_tf(tf.constant(path.read_bytes()))


def test_one_size_rule_for_every_entry_point(tmp_path):
    """A side below MIN_SIDE is unusable everywhere: probe (check, embed, pretrain) and load_image agree."""
    from hemoembed.data.imageio import MIN_SIDE

    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "tiny.png")
    Image.fromarray(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8)).save(tmp_path / "edge.png")
    assert probe(tmp_path / "tiny.png").error == f"tiny image (3x3 < {MIN_SIDE} px)"
    assert probe(tmp_path / "edge.png").ok
    with pytest.raises(InputError, match="tiny.png: tiny image"):
        load_image(tmp_path / "tiny.png")


@pytest.mark.parametrize("kind", ["jpeg", "jpeg-progressive", "jpeg-gray", "png", "bmp", "tiff", "tiff-lzw"])
def test_the_cheap_full_check_refuses_exactly_what_a_full_decode_refuses(kind):
    """Truncated at every length in the last 64 bytes and at 60 others, and 120 single corrupted bytes: the
    probe refuses a file exactly when a full-size decode fails, with that decoder's message in one line; a
    file cut in half is always refused as truncated or not an image."""
    import random

    from hemoembed.data.imageio import probe_bytes

    data = encoded_cell(kind)
    assert probe_bytes(data, full=True).ok and full_decode_error(data) is None
    rng = random.Random(kind)
    cuts = sorted(set(range(len(data) - 64, len(data))) | set(rng.sample(range(1, len(data) - 64), 60)))
    damaged = [data[:cut] for cut in cuts]
    for _ in range(120):
        flipped = bytearray(data)
        flipped[rng.randrange(len(data) // 4, len(data))] ^= rng.randrange(1, 256)
        damaged.append(bytes(flipped))
    refused = 0
    for bad in damaged:
        info, oracle = probe_bytes(bad, full=True), full_decode_error(bad)
        assert "\n" not in info.error
        if oracle is None:  # e.g. a JPEG without its end marker, a flipped bit in a pixel value
            assert info.ok or info.error.startswith("tiny image"), (kind, len(bad), info.error)
        else:
            refused += 1
            assert oracle in info.error, (kind, len(bad), info.error, oracle)
            assert info.error.startswith(("truncated image", "not an image")), info.error
    assert refused >= len(cuts) // 2  # most cuts break every format
    half = probe_bytes(data[: len(data) // 2], full=True)
    assert half.error.startswith(("truncated image (", "not an image (")), half.error
    if kind.startswith("jpeg"):
        assert half.error.startswith("truncated image (image file is truncated"), half.error
