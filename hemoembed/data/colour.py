"""Colour normalisation: gray-world white balance and Reinhard et al. (2001) colour transfer.

Every function has a numpy version (float64 maths, for files and statistics) and a TensorFlow
version (float32, tf ops only, graph/XLA friendly, for ``tf.data`` pipelines and models); the two
agree within one grey level on the [0, 255] scale.

Conventions
-----------
* Images are RGB with channels last: one image ``(H, W, 3)`` or a batch ``(..., H, W, 3)``;
  statistics are always per image (over H and W).
* uint8 input gives uint8 output (rounded, clipped to [0, 255]); float input is on the
  [0, 255] scale and gives the same float dtype, clipped to [0, 255].
* lαβ follows Reinhard et al. 2001 ("Color transfer between images"): RGB scaled to [0, 1] →
  LMS with Reinhard's matrix → log10 → the orthogonal decorrelating matrix. log10(0) is avoided
  by flooring LMS at ``LMS_FLOOR`` = 1/(255·64): below the smallest LMS value any non-black
  uint8 pixel can have (0.0241/255), so only pure black (or float values below 1/64 of a level)
  is touched, and black comes back as 1/64 of a level, which rounds to 0.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import atomic_write_text
from ..errors import InputError

RUN_REFERENCE_FILE = "colour_reference.json"  # the source style, kept in every pretraining run folder

__all__ = [
    "LMS_FLOOR",
    "RUN_REFERENCE_FILE",
    "ReinhardReference",
    "gray_world",
    "gray_world_tf",
    "image_lab_stats",
    "lab_to_rgb",
    "reinhard_normalize",
    "reinhard_normalize_tf",
    "rgb_to_lab",
]

LMS_FLOOR = 1.0 / (255.0 * 64.0)
"""Smallest LMS value (RGB scaled to [0, 1]) before log10; see the module docstring."""

_MIN_STD = 1e-4
"""A lαβ channel with a per-image std below this is treated as flat: shifted, never scaled."""

_SPACE = "reinhard2001-lab-rgb01"
"""Tag saved with a reference so a file from another lαβ convention is refused."""

_RGB2LMS = np.array(
    [[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]], dtype=np.float64
)
_LOG2LAB = np.diag([1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)]) @ np.array(
    [[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]]
)
_LMS2RGB = np.linalg.inv(_RGB2LMS)
_LAB2LOG = np.linalg.inv(_LOG2LAB)  # orthogonal: equals _LOG2LAB.T up to rounding


# --------------------------------------------------------------------------- validation helpers


def _check_rgb(image: Any, what: str = "image") -> np.ndarray:
    """Return ``image`` as an array after checking it is uint8/float RGB with channels last."""
    arr = np.asarray(image)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise InputError(f"{what}: expected an RGB image of shape (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what}: expected uint8 or float pixels, got dtype {arr.dtype}")
    return arr


def _as_input_dtype(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Clip float [0, 255] results and cast back to the dtype of ``like`` (uint8 rounds)."""
    out = np.clip(out, 0.0, 255.0)
    if like.dtype == np.uint8:
        return np.rint(out).astype(np.uint8)
    return out.astype(like.dtype, copy=False)


def _triple(values: Any, name: str, where: str) -> tuple[float, float, float]:
    """Three finite floats, or InputError naming ``where``."""
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {name} must be three numbers, got {values!r}") from None
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: {name} must be three finite numbers, got {values!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


# --------------------------------------------------------------------------- gray world


def _gains(channel_means: Any, xp: Any) -> Any:
    """Gray-world gains from per-channel means (``xp`` is numpy or tf.experimental.numpy).

    gain_c = overall mean / mean_c; a channel whose mean is 0 keeps gain 1 (it stays zero).
    """
    overall = xp.mean(channel_means, axis=-1, keepdims=True)
    positive = channel_means > 0
    safe = xp.where(positive, channel_means, xp.ones_like(channel_means))
    return xp.where(positive, overall / safe, xp.ones_like(channel_means))


def gray_world(image: np.ndarray) -> np.ndarray:
    """Gray-world white balance: scale each channel so its mean equals the image's overall mean.

    uint8 in → uint8 out (rounded), float ([0, 255]) in → same float dtype out; clipped to
    [0, 255]. A zero channel stays zero (gain 1, no inf/NaN). Batches ``(..., H, W, 3)`` are
    balanced image by image.
    """
    arr = _check_rgb(image)
    x = arr.astype(np.float64)
    gains = _gains(x.mean(axis=(-3, -2), keepdims=True), np)
    return _as_input_dtype(x * gains, arr)


def gray_world_tf(images: Any, means_of: Any = None) -> Any:
    """TensorFlow gray world for float32 ``(H, W, 3)`` or ``(B, H, W, 3)`` in [0, 255].

    ``means_of``: take the channel means from this region of the image (e.g. its central crop) instead
    of the whole image; the gains are applied to the whole image.
    """
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    region = x if means_of is None else tf.cast(means_of, tf.float32)
    gains = _gains(tf.reduce_mean(region, axis=[-3, -2], keepdims=True), tf.experimental.numpy)
    return tf.clip_by_value(x * gains, 0.0, 255.0)


# --------------------------------------------------------------------------- lαβ conversion


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Reinhard lαβ of RGB pixels in [0, 255] (float64, same shape); LMS floored at LMS_FLOOR."""
    x = np.asarray(rgb, dtype=np.float64) / 255.0
    lms = np.maximum(x @ _RGB2LMS.T, LMS_FLOOR)
    return np.log10(lms) @ _LOG2LAB.T


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`rgb_to_lab` to RGB on the [0, 255] scale (float64, not clipped)."""
    lms = np.power(10.0, np.asarray(lab, dtype=np.float64) @ _LAB2LOG.T)
    return (lms @ _LMS2RGB.T) * 255.0


def _shifted_moments(lab: Any, xp: Any) -> tuple[Any, Any]:
    """Per-image channel mean and std over H, W, keepdims (``xp`` is numpy or tf numpy).

    Statistics are taken around the first pixel so a flat channel has std exactly 0 even in
    float32 (the usual mean-then-subtract loses digits for |lαβ| up to ~7).
    """
    first = lab[..., :1, :1, :]
    shifted = lab - first
    offset = xp.mean(shifted, axis=(-3, -2), keepdims=True)
    var = xp.mean(xp.square(shifted - offset), axis=(-3, -2), keepdims=True)
    return first + offset, xp.sqrt(var)


def image_lab_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel lαβ mean and std of one RGB image, each of shape (3,)."""
    arr = _check_rgb(image)
    if arr.ndim != 3:
        raise InputError(f"image: expected one image of shape (H, W, 3), got shape {arr.shape}")
    mean, std = _shifted_moments(rgb_to_lab(arr), np)
    return mean.reshape(3), std.reshape(3)


# --------------------------------------------------------------------------- reference


@dataclasses.dataclass(frozen=True)
class ReinhardReference:
    """Target lαβ statistics for Reinhard normalisation (see :meth:`from_images`)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        mean = _triple(self.mean, "mean", "Reinhard reference")
        std = _triple(self.std, "std", "Reinhard reference")
        if min(std) <= 0:
            raise InputError(f"Reinhard reference: std must be positive, got {list(std)}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: ``{"space", "mean", "std"}``."""
        return {"space": _SPACE, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "Reinhard reference") -> ReinhardReference:
        """Build from :meth:`to_dict` output; InputError naming ``source`` when it is wrong."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a mapping with 'mean' and 'std'")
        unknown = sorted(set(data) - {"space", "mean", "std"})
        missing = sorted({"mean", "std"} - set(data))
        if unknown or missing:
            raise InputError(
                f"{source}: Reinhard reference needs keys mean, std"
                f" (missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'})"
            )
        if data.get("space", _SPACE) != _SPACE:
            raise InputError(f"{source}: colour space {data['space']!r} is not {_SPACE!r}")
        try:
            return cls(mean=data["mean"], std=data["std"])
        except InputError as exc:
            message = str(exc).removeprefix("Reinhard reference: ")
            raise InputError(f"{source}: {message}") from None

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the reference as JSON atomically (temporary file, then rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ReinhardReference:
        """Read a reference written by :meth:`to_json`; InputError naming the file otherwise."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: Reinhard reference file not found")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: cannot read Reinhard reference ({exc})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_images(
        cls, images: Iterable[np.ndarray], sample: int | None = None, seed: int = 0
    ) -> ReinhardReference:
        """Dataset-level reference from (a random sample of at most ``sample``) images.

        mean = average of the per-image lαβ means; std = average of the per-image lαβ stds.
        Averaging per-image stds (rather than pooling all pixels) describes a *typical image*
        of the site: pooled std would add the between-image spread of the means and make
        every normalised image over-contrasted. Sampling is deterministic for a ``seed``: a
        ``Sequence`` is indexed only at the chosen positions (lazy loaders read just those);
        any other iterable is read once with reservoir sampling (stats kept, pixels not).
        """
        if sample is not None and sample < 1:
            raise InputError(f"Reinhard reference: sample must be at least 1, got {sample}")
        stats = _sampled_stats(images, sample, np.random.default_rng(seed))
        if not stats:
            raise InputError("Reinhard reference: no images to compute the reference from")
        means = np.mean([m for m, _ in stats], axis=0)
        stds = np.mean([s for _, s in stats], axis=0)
        if np.min(stds) <= 0:
            raise InputError(
                f"Reinhard reference: the {len(stats)} image(s) are flat in some lαβ channel"
                f" (std {stds.tolist()}); use images with colour variation"
            )
        return cls(mean=tuple(means), std=tuple(stds))


def _stats_of(image: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        return image_lab_stats(image)
    except InputError as exc:
        raise InputError(f"Reinhard reference: image #{index}: {exc}") from None


def _sampled_stats(
    images: Iterable[np.ndarray], sample: int | None, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """lαβ stats of all images, or of a uniform random subset of at most ``sample`` of them."""
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        n = len(images)
        if sample is None or sample >= n:
            chosen = range(n)
        else:
            chosen = sorted(rng.choice(n, size=sample, replace=False).tolist())
        return [_stats_of(images[i], i) for i in chosen]
    reservoir: list[tuple[np.ndarray, np.ndarray]] = []
    for i, image in enumerate(images):
        if sample is None or i < sample:
            reservoir.append(_stats_of(image, i))
        else:
            slot = int(rng.integers(0, i + 1))
            if slot < sample:
                reservoir[slot] = _stats_of(image, i)
    return reservoir


# --------------------------------------------------------------------------- Reinhard transfer


def _scales(own_std: Any, ref_std: Any, xp: Any) -> Any:
    """ref_std / own_std, or 1 where the image channel is flat (no inf/NaN)."""
    flat = own_std < _MIN_STD
    safe = xp.where(flat, xp.ones_like(own_std), own_std)
    return xp.where(flat, xp.ones_like(own_std), ref_std / safe)


def reinhard_normalize(image: np.ndarray, reference: ReinhardReference) -> np.ndarray:
    """Reinhard colour transfer of one image (or a batch, per image) to ``reference``.

    In lαβ: subtract the image's own channel means, scale by reference std / own std (1 for a
    flat channel, which is only shifted), add the reference means; back to RGB and clip to
    [0, 255]. uint8 in → uint8 out, float in → same float dtype out.
    """
    if not isinstance(reference, ReinhardReference):
        raise InputError(f"reference: expected a ReinhardReference, got {type(reference).__name__}")
    arr = _check_rgb(image)
    lab = rgb_to_lab(arr)
    own_mean, own_std = _shifted_moments(lab, np)
    scale = _scales(own_std, np.asarray(reference.std), np)
    out = (lab - own_mean) * scale + np.asarray(reference.mean)
    return _as_input_dtype(lab_to_rgb(out), arr)


def reinhard_normalize_tf(images: Any, mean: Any, std: Any) -> Any:
    """TensorFlow Reinhard transfer of float32 ``(H, W, 3)``/``(B, H, W, 3)`` in [0, 255].

    ``mean``/``std`` are the reference lαβ statistics (three numbers each, e.g.
    ``ReinhardReference.mean``); statistics are per image. Returns float32 in [0, 255].
    """
    import tensorflow as tf

    tnp = tf.experimental.numpy
    if not tf.is_tensor(mean):
        mean = _triple(mean, "mean", "reinhard_normalize_tf")
    if not tf.is_tensor(std):
        std = _triple(std, "std", "reinhard_normalize_tf")
    ref_mean = tf.reshape(tf.cast(mean, tf.float32), [3])
    ref_std = tf.reshape(tf.cast(std, tf.float32), [3])

    x = tf.cast(images, tf.float32) / 255.0
    lms = tf.maximum(tf.matmul(x, tf.constant(_RGB2LMS.T, tf.float32)), LMS_FLOOR)
    log_lms = tf.math.log(lms) * (1.0 / math.log(10.0))
    lab = tf.matmul(log_lms, tf.constant(_LOG2LAB.T, tf.float32))

    own_mean, own_std = _shifted_moments(lab, tnp)
    out = (lab - own_mean) * _scales(own_std, ref_std, tnp) + ref_mean

    lms = tf.exp(tf.matmul(out, tf.constant(_LAB2LOG.T, tf.float32)) * math.log(10.0))
    rgb = tf.matmul(lms, tf.constant(_LMS2RGB.T * 255.0, tf.float32))
    return tf.clip_by_value(rgb, 0.0, 255.0)
