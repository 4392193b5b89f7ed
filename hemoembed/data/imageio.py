"""Image decoding: one path for the whole project.

Pixels are always decoded by :func:`decode_rgb_tf` (TensorFlow's native JPEG/PNG/BMP decoders inside
the graph, Pillow for formats TensorFlow lacks such as TIFF, and for GIF, whose every animation frame
TensorFlow would decode). Numpy callers go through the same function eagerly, so a cell looks identical in
``check``, ``pretrain``, ``embed``, ``predict`` and ``gradcam``. :func:`probe` reads headers and bytes
(size, format, sha256) without decoding and applies the one usability rule (at most ``MAX_PIXELS``, no side
below ``MIN_SIDE``); the decoder itself refuses a header announcing more than ``MAX_PIXELS`` before any
pixel is allocated, so no entry point can decode a decompression bomb, probed or not.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif")
MAX_PIXELS = 40_000_000  # ~6300×6300: far beyond any single-cell crop
MIN_SIDE = 16  # a smaller image is never a usable cell crop: check, embed, pretrain and predict all refuse it
_NATIVE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM")
BOMB = "possible decompression bomb"


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe` learns about one file without decoding its pixels."""

    path: str
    sha256: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    size_bytes: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def probe(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, full: bool = False,
          min_side: int = MIN_SIDE) -> ImageInfo:
    """Hash the bytes and read the header; ``full`` also decodes to catch truncated files.

    An image with more than ``max_pixels`` or a side below ``min_side`` is not usable (``error`` says why).
    """
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return ImageInfo(path, error=f"unreadable ({exc.strerror or exc})")
    return probe_bytes(data, path, max_pixels, full, min_side)


def probe_bytes(data: bytes, path: str = "", max_pixels: int = MAX_PIXELS, full: bool = False,
                min_side: int = MIN_SIDE) -> ImageInfo:
    """:func:`probe` of bytes already in memory (an upload, checked before anything is written); ``path``
    only names it in the result."""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return ImageInfo(path, digest, error="empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height, fmt = img.width, img.height, (img.format or "").upper()
            if width * height > max_pixels:
                return ImageInfo(path, digest, width, height, fmt, len(data),
                                 error=f"too many pixels ({width}x{height} > {max_pixels}): {BOMB}")
            if min(width, height) < min_side:
                return ImageInfo(path, digest, width, height, fmt, len(data),
                                 error=f"tiny image ({width}x{height} < {min_side} px)")
            if full:
                _decode_all(img)
    except Image.DecompressionBombError as exc:
        return ImageInfo(path, digest, size_bytes=len(data), error=f"decompression bomb ({exc})")
    except Image.UnidentifiedImageError:
        return ImageInfo(path, digest, size_bytes=len(data), error="not an image (unrecognised format)")
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated image" if "truncated" in str(exc).lower() else "not an image"
        return ImageInfo(path, digest, size_bytes=len(data), error=f"{reason} ({exc})")
    return ImageInfo(path, digest, width, height, fmt, len(data))


def _decode_all(img: Image.Image) -> None:
    """Decode all of an opened image's data: what catches a truncated or corrupt file.

    A JPEG is decoded at 1/8 scale (Pillow's ``draft``: libjpeg still entropy-decodes every coefficient of
    every scan and only skips most of the inverse DCT, so the same files fail with the same messages, tested
    on truncated and corrupted files), a third to a half less CPU than a full decode on 256-px cells.
    """
    if img.format in ("JPEG", "MPO"):
        img.draft(img.mode, (1, 1))
    img.load()


PROBE_CHUNK = 32  # files per thread-pool task (see probe_many)


def probe_many(paths: Sequence[str], *, full: bool = False, max_pixels: int = MAX_PIXELS,
               min_side: int = MIN_SIDE, workers: int | None = None, progress=None) -> list[ImageInfo]:
    """:func:`probe` over many files, in order, on a thread pool of ``workers`` (default: the cores, at most 8;
    file IO, hashing and decoding release the GIL).

    Each task probes :data:`PROBE_CHUNK` files: with a task per file (and twice the cores in threads) the
    futures and GIL hand-offs cost more than the work, 0.15–0.18 CPU ms per 10-KB PBC JPEG against 0.07–0.09
    for a plain loop (benchmarks/RESULTS.md, issue 18), and ``embed`` hashes before it embeds.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = [paths[i:i + PROBE_CHUNK] for i in range(0, len(paths), PROBE_CHUNK)]
    out: list[ImageInfo] = []
    with ThreadPoolExecutor(workers) as pool:
        for infos in pool.map(lambda chunk: [probe(p, max_pixels, full, min_side) for p in chunk], chunks):
            out.extend(infos)
            if progress is not None:
                progress(len(infos))
    return out


def _pil_decode(data: bytes) -> np.ndarray:
    """Pillow fallback for formats TensorFlow cannot decode (TIFF, 16-bit, palette...) → RGB uint8."""
    raw = data.item() if isinstance(data, np.ndarray) else data
    with Image.open(io.BytesIO(raw)) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"too many pixels ({img.width}x{img.height} > {MAX_PIXELS}): {BOMB}")
        img.load()  # the first frame only (GIF, TIFF)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
            gray = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        if img.mode == "F":
            gray = np.clip(np.round(np.asarray(img)), 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        arr = np.asarray(img)
        if arr.dtype == np.uint16:  # 16-bit RGB TIFF
            arr = np.round(arr / 257.0).astype(np.uint8)
            img = Image.fromarray(arr[..., :3] if arr.ndim == 3 else arr)
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


JPEG_SCALES = (1, 2, 4, 8)  # libjpeg's DCT scaling: decode at 1/r of the size for the cost of a smaller image


def decode_rgb_tf(data):
    """Decode encoded image bytes (scalar string tensor) to an RGB uint8 tensor of shape (H, W, 3).

    Whatever the format, a header announcing more than ``MAX_PIXELS`` is refused before decoding.
    """
    import tensorflow as tf

    return _decode_tf(data, lambda shape: tf.io.decode_jpeg(data, channels=3))


def decode_central_crop_tf(data, crop_fraction: float, min_side: int = 0):
    """The central square crop of encoded image bytes, RGB uint8: ``crop_fraction`` of the shorter side, taken
    as :func:`~hemoembed.data.preprocess.central_crop_tf` takes it.

    A JPEG is decoded only inside the crop window and at the coarsest of its DCT scales 1/1, 1/2, 1/4, 1/8
    whose crop keeps at least ``min_side`` px (libjpeg scales in the IDCT and skips what lies outside: far
    cheaper than decoding fully, cropping and shrinking); other formats are decoded fully, then cropped.
    """
    import tensorflow as tf

    from .preprocess import central_crop_tf

    def jpeg(shape):
        scales = JPEG_SCALES if min_side else JPEG_SCALES[:1]
        sides = (shape[None, :] + tf.constant([[r - 1] for r in scales])) // tf.constant([[r] for r in scales])
        crops = tf.maximum(tf.cast(tf.round(tf.cast(tf.reduce_min(sides, 1), tf.float32) * crop_fraction), tf.int32), 1)
        windows = tf.concat([(sides - crops[:, None]) // 2, tf.stack([crops, crops], 1)], 1)  # top, left, h, w
        if not min_side:
            return tf.io.decode_and_crop_jpeg(data, windows[0], channels=3)
        scale = tf.maximum(tf.reduce_sum(tf.cast(crops >= min_side, tf.int32)) - 1, 0)  # crops only shrink
        window = tf.gather(windows, scale)
        return tf.switch_case(scale, [lambda r=r: tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=r)
                                      for r in scales])

    return _decode_tf(data, jpeg, lambda image: central_crop_tf(image, crop_fraction))


def _decode_tf(data, jpeg, crop_other=None):
    """The one format dispatch: ``jpeg(header (h, w) int32)`` decodes a JPEG whose header passed the pixel
    limit; PNG/BMP (TensorFlow) and anything else (Pillow) are checked, decoded and passed to ``crop_other``."""
    import tensorflow as tf

    limit = MAX_PIXELS  # read at trace time: a patched limit (tests) reaches the graph

    def jpeg_branch():
        shape = tf.io.extract_jpeg_shape(data)[:2]
        with tf.control_dependencies([_refuse_bomb(tf.reduce_prod(tf.cast(shape, tf.int64)), limit)]):
            return jpeg(shape)

    def png_bmp():
        with tf.control_dependencies([_refuse_bomb(_png_bmp_pixels_tf(data), limit)]):
            return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    def other():
        native = tf.logical_or(tf.equal(tf.strings.substr(data, 0, len(_NATIVE_MAGIC[1])), _NATIVE_MAGIC[1]),
                               tf.equal(tf.strings.substr(data, 0, len(_NATIVE_MAGIC[2])), _NATIVE_MAGIC[2]))
        image = tf.cond(native, png_bmp, lambda: tf.numpy_function(_pil_decode, [data], tf.uint8, stateful=False))
        image.set_shape([None, None, 3])
        return image if crop_other is None else crop_other(image)

    image = tf.cond(tf.equal(tf.strings.substr(data, 0, len(_NATIVE_MAGIC[0])), _NATIVE_MAGIC[0]), jpeg_branch, other)
    image.set_shape([None, None, 3])
    return image


def _refuse_bomb(pixels, limit: int):
    """One Assert op (string data: no guarding cond, so it costs nothing per image when it holds)."""
    import tensorflow as tf

    return tf.debugging.Assert(pixels <= limit, [f"too many pixels (> {limit}): {BOMB}"])


def _png_bmp_pixels_tf(data):
    """Width × height announced by a PNG or BMP header (int64 scalar tensor), read without decoding."""
    import tensorflow as tf

    head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 26), b"\0" * 26]), 0, 26)

    def numbers(offset: int, kind, big_endian: bool = False):  # two numbers from ``offset``, as int64
        raw = tf.strings.substr(head, offset, 2 * kind.size)
        return tf.cast(tf.io.decode_raw(raw, kind, little_endian=not big_endian), tf.int64)

    png_sides = numbers(16, tf.int32, big_endian=True)
    png = tf.reduce_prod(tf.where(png_sides < 0, png_sides + 2**32, png_sides))  # unsigned 32-bit
    core_bmp = tf.equal(numbers(14, tf.int32)[0], 12)  # OS/2 BITMAPCOREHEADER: 16-bit sides
    bmp = tf.where(core_bmp, tf.reduce_prod(numbers(18, tf.uint16)),
                   tf.reduce_prod(tf.abs(numbers(18, tf.int32))))  # BMP heights are negative top-down
    return tf.where(tf.equal(tf.strings.substr(data, 0, len(_NATIVE_MAGIC[1])), _NATIVE_MAGIC[1]), png, bmp)


def read_file_tf(path):
    """Read a file's bytes inside a tf.data pipeline."""
    import tensorflow as tf

    return tf.io.read_file(path)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode one file to RGB uint8 (H, W, 3) through the project's single decoding path."""
    info = probe(path)
    if not info.ok:
        raise InputError(f"{path}: {info.error}")
    import tensorflow as tf

    try:
        return decode_rgb_tf(tf.constant(Path(path).read_bytes())).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
        raise InputError(f"{path}: cannot decode image ({exc.message.splitlines()[0]})") from None
    except (ValueError, OSError) as exc:  # the Pillow path, eagerly
        raise InputError(f"{path}: cannot decode image ({exc})") from None


class LazyImages(Sequence):
    """Images decoded on indexing: statistics can sample a few files of a large set without loading it."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # type: ignore[override]
        return load_image(self.paths[i])


def load_images(paths: Sequence[str | os.PathLike], size: int | None = None) -> list[np.ndarray] | np.ndarray:
    """Decode many files; with ``size``, resize each (bilinear) and return one (N, size, size, 3) array."""
    images = [load_image(p) for p in paths]
    if size is None:
        return images
    import tensorflow as tf

    return np.stack([tf.cast(tf.round(tf.image.resize(im, (size, size))), tf.uint8).numpy() for im in images])


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write an RGB uint8 array as PNG through a temporary file (never a half-written image)."""
    from ..config import atomic_write_bytes

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
