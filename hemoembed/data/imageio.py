"""Image decoding: one path for the whole project.

Pixels are always decoded by :func:`decode_rgb_tf` (TensorFlow's native JPEG/PNG/BMP/GIF decoders inside
the graph, Pillow only for formats TensorFlow lacks such as TIFF). Numpy callers go through the same
function eagerly, so a cell looks identical in ``check``, ``pretrain``, ``embed`` and ``gradcam``.
:func:`probe` reads headers and bytes (size, format, sha256) without decoding, and guards against
decompression bombs before any pixel is allocated.
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
MIN_SIDE = 16
_NATIVE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8")


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


def probe(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, full: bool = False) -> ImageInfo:
    """Hash the bytes and read the header; ``full`` also decodes to catch truncated files."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return ImageInfo(path, error=f"unreadable ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return ImageInfo(path, digest, error="empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height, fmt = img.width, img.height, (img.format or "").upper()
            if width * height > max_pixels:
                return ImageInfo(path, digest, width, height, fmt, len(data),
                                 error=f"too many pixels ({width}x{height} > {max_pixels}): "
                                       "possible decompression bomb")
            if full:
                img.load()
    except Image.DecompressionBombError as exc:
        return ImageInfo(path, digest, size_bytes=len(data), error=f"decompression bomb ({exc})")
    except Image.UnidentifiedImageError:
        return ImageInfo(path, digest, size_bytes=len(data), error="not an image (unrecognised format)")
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated image" if "truncated" in str(exc).lower() else "not an image"
        return ImageInfo(path, digest, size_bytes=len(data), error=f"{reason} ({exc})")
    return ImageInfo(path, digest, width, height, fmt, len(data))


def probe_many(paths: Sequence[str], *, full: bool = False, max_pixels: int = MAX_PIXELS,
               workers: int | None = None, progress=None) -> list[ImageInfo]:
    """:func:`probe` over many files with a thread pool (file IO and decoding release the GIL)."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    out: list[ImageInfo] = []
    with ThreadPoolExecutor(workers) as pool:
        for info in pool.map(lambda p: probe(p, max_pixels, full), paths, chunksize=16):
            out.append(info)
            if progress is not None:
                progress(1)
    return out


def _pil_decode(data: bytes) -> np.ndarray:
    """Pillow fallback for formats TensorFlow cannot decode (TIFF, 16-bit, palette...) → RGB uint8."""
    raw = data.item() if isinstance(data, np.ndarray) else data
    with Image.open(io.BytesIO(raw)) as img:
        img.load()
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


def decode_rgb_tf(data):
    """Decode encoded image bytes (scalar string tensor) to an RGB uint8 tensor of shape (H, W, 3)."""
    import tensorflow as tf

    native = tf.reduce_any(tf.stack([tf.equal(tf.strings.substr(data, 0, len(m)), m) for m in _NATIVE_MAGIC]))

    def tf_native():
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    def pillow():
        return tf.numpy_function(_pil_decode, [data], tf.uint8, stateful=False)

    image = tf.cond(native, tf_native, pillow)
    image.set_shape([None, None, 3])
    return image


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
