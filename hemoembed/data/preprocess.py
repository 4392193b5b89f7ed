"""The preprocessing record every encoder carries, and the one function that applies it.

Decoded RGB uint8 image → (optional) gray-world colour normalisation → central crop of ``crop_fraction``
of the shorter side → bilinear resize to ``image_size`` → float32 in [0, 255]. Training, embedding,
prediction and GradCAM all call :func:`preprocess_tf` with the record saved inside the encoder, so a cell
is seen the same way everywhere.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import InputError

ColourMode = Literal["grayworld", "none"]


@dataclass(frozen=True)
class PreprocessingRecord:
    """How raw images become encoder inputs. ``crop_fraction`` 0.875 is the paper's 224-of-256 crop."""

    image_size: int = 224
    crop_fraction: float = 0.875
    colour: ColourMode = "grayworld"

    def __post_init__(self) -> None:
        if not 16 <= int(self.image_size) <= 1024:
            raise InputError(f"image size {self.image_size} is outside 16..1024 px")
        if not 0.1 <= float(self.crop_fraction) <= 1.0:
            raise InputError(f"crop fraction {self.crop_fraction} is outside 0.1..1.0")
        if self.colour not in ("grayworld", "none"):
            raise InputError(f"colour normalisation {self.colour!r} is not one of grayworld, none")

    def to_dict(self) -> dict:
        return {"image_size": int(self.image_size), "crop_fraction": float(self.crop_fraction),
                "colour": self.colour}

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessingRecord:
        try:
            return cls(int(data["image_size"]), float(data["crop_fraction"]), str(data["colour"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid preprocessing record {data!r} ({exc})") from None


def central_crop_tf(image, crop_fraction: float):
    """Square central crop whose side is ``crop_fraction`` of the image's shorter side."""
    import tensorflow as tf

    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    side = tf.cast(tf.round(tf.cast(tf.minimum(height, width), tf.float32) * crop_fraction), tf.int32)
    side = tf.maximum(side, 1)
    top = (height - side) // 2
    left = (width - side) // 2
    return image[..., top:top + side, left:left + side, :]


def preprocess_tf(image, record: PreprocessingRecord, *, crop: bool = True):
    """Apply ``record`` to one decoded (H, W, 3) uint8 image; returns float32 (S, S, 3) in [0, 255].

    ``crop=False`` skips the crop/resize (the training pipeline crops after geometric augmentation).
    """
    import tensorflow as tf

    from .colour import gray_world_tf

    image = tf.cast(image, tf.float32)
    if record.colour == "grayworld":
        image = gray_world_tf(image)
    if crop:
        image = central_crop_tf(image, record.crop_fraction)
        image = tf.image.resize(image, (record.image_size, record.image_size), method="bilinear", antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
    return image


def load_inputs(paths: Sequence[str | os.PathLike], record: PreprocessingRecord, batch_size: int = 64):
    """Image files → one float32 (N, S, S, 3) array of encoder inputs, in order.

    The checked way to hold preprocessed images in memory (the adapter's shots, GradCAM's images): the
    pipeline's one decoding path (:func:`~hemoembed.data.pipeline.inference_dataset`), and a file that
    cannot be decoded is an error that names it and why, never a silently shorter array.
    """
    import numpy as np

    from .imageio import probe
    from .pipeline import inference_dataset

    paths = [str(p) for p in paths]
    chunks, seen = [np.zeros((0, record.image_size, record.image_size, 3), np.float32)], []
    if paths:
        for images, indices in inference_dataset(paths, record, batch_size):
            chunks.append(images.numpy())
            seen.extend(indices.numpy().tolist())
    if len(seen) != len(paths):
        bad = paths[min(set(range(len(paths))) - set(seen))]
        info = probe(bad)
        raise InputError(f"{bad}: {info.error if not info.ok else 'cannot decode image'} "
                         "(check the images with hemoembed check)")
    return np.concatenate(chunks)
