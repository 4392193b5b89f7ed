"""The preprocessing record every encoder carries, and the one path that applies it.

Training, embedding, prediction, GradCAM, the adapter and the review app all turn image bytes into encoder
inputs with the record saved inside the encoder, so a cell is seen the same way everywhere. What the record
means depends on its ``version`` (an encoder keeps the version it was trained with, so it embeds exactly as
it always did; new encoders get ``RECORD_VERSION``):

* **1** (hemoembed before #18): decode at full size → gray world with the whole image's channel means →
  central crop of ``crop_fraction`` of the shorter side → antialiased bilinear resize to ``image_size`` →
  float32 in [0, 255].
* **2**: decode the central crop (a JPEG only inside the crop window, at the coarsest DCT scale 1/1 … 1/8
  whose crop keeps at least ``image_size`` px; other formats fully, then cropped) → one resize to
  ``image_size`` (area average when shrinking, bilinear otherwise) → gray world with the channel means of
  that resized crop, values above 255 clipped. The same meaning at a fraction of the cost: no full-size
  float image, no antialiasing kernel, and the colour step runs on whole batches.

Pipelines apply :func:`prepare_bytes_tf` to each file's bytes and :func:`finish_batch_tf` to each batch;
:func:`preprocess_bytes_tf` is both for one file, :func:`preprocess_tf` both for an already decoded image
(version 2: the crop of a fully decoded JPEG may differ from the decoded crop window by a few levels along
the crop's edge, where chroma upsampling sees different neighbours).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from ..errors import InputError

if TYPE_CHECKING:
    from .imageio import ImageInfo

ColourMode = Literal["grayworld", "none"]
RECORD_VERSION = 2  # what new encoders get
RECORD_VERSIONS = (1, 2)


@dataclass(frozen=True)
class PreprocessingRecord:
    """How raw images become encoder inputs. ``crop_fraction`` 0.875 is the paper's 224-of-256 crop."""

    image_size: int = 224
    crop_fraction: float = 0.875
    colour: ColourMode = "grayworld"
    version: int = RECORD_VERSION

    def __post_init__(self) -> None:
        if not 16 <= int(self.image_size) <= 1024:
            raise InputError(f"image size {self.image_size} is outside 16..1024 px")
        if not 0.1 <= float(self.crop_fraction) <= 1.0:
            raise InputError(f"crop fraction {self.crop_fraction} is outside 0.1..1.0")
        if self.colour not in ("grayworld", "none"):
            raise InputError(f"colour normalisation {self.colour!r} is not one of grayworld, none")
        if self.version not in RECORD_VERSIONS:
            raise InputError(f"preprocessing record version {self.version!r} is unknown to this hemoembed "
                             f"(it knows {', '.join(map(str, RECORD_VERSIONS))}): upgrade hemoembed")

    def to_dict(self) -> dict:
        """Version 1 records keep their original three keys, so old encoders keep their fingerprints."""
        data = {"image_size": int(self.image_size), "crop_fraction": float(self.crop_fraction),
                "colour": self.colour}
        return data if self.version == 1 else {**data, "version": int(self.version)}

    def without_colour(self) -> PreprocessingRecord:
        """The same record (version included) with no colour step: an adapted encoder does colour inside."""
        return replace(self, colour="none")

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessingRecord:
        """A record without ``version`` was written before versions existed: version 1."""
        try:
            return cls(int(data["image_size"]), float(data["crop_fraction"]), str(data["colour"]),
                       int(data.get("version", 1)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
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


def resize_tf(images, size: int, record: PreprocessingRecord):
    """The record's resampling of square ``(..., H, H, 3)`` images to ``size`` × ``size``, float32 in [0, 255].

    Version 1: antialiased bilinear. Version 2: area average when shrinking (each source pixel weighted by
    its overlap: antialiased without a kernel), bilinear when enlarging or keeping the size.
    """
    import tensorflow as tf

    if record.version == 1:
        out = tf.image.resize(images, (size, size), method="bilinear", antialias=True)
        return tf.clip_by_value(out, 0.0, 255.0)
    return tf.cond(tf.shape(images)[-3] > size,
                   lambda: tf.image.resize(images, (size, size), method="area"),
                   lambda: tf.image.resize(images, (size, size), method="bilinear"))


def prepare_image_tf(image, record: PreprocessingRecord):
    """The per-image part of the record: decoded (H, W, 3) uint8 → (S, S, 3) float32 in [0, 255]."""
    import tensorflow as tf

    if record.version == 1:
        from .colour import gray_world_tf

        x = tf.cast(image, tf.float32)
        if record.colour == "grayworld":
            x = gray_world_tf(x)
        return resize_tf(central_crop_tf(x, record.crop_fraction), int(record.image_size), record)
    return resize_tf(central_crop_tf(image, record.crop_fraction), int(record.image_size), record)


def prepare_bytes_tf(data, record: PreprocessingRecord):
    """The per-image part of the record from encoded bytes: (S, S, 3) float32 in [0, 255].

    Version 2 decodes only the central crop, at the JPEG DCT scale the record allows (see
    :func:`~hemoembed.data.imageio.decode_central_crop_tf`); version 1 decodes fully.
    """
    from .imageio import decode_central_crop_tf, decode_rgb_tf

    if record.version == 1:
        return prepare_image_tf(decode_rgb_tf(data), record)
    crop = decode_central_crop_tf(data, float(record.crop_fraction), int(record.image_size))
    return resize_tf(crop, int(record.image_size), record)


def finishes_batches(record: PreprocessingRecord) -> bool:
    """Whether :func:`finish_batch_tf` does anything for ``record`` (pipelines skip the step otherwise)."""
    return record.version != 1 and record.colour == "grayworld"


def finish_batch_tf(images, record: PreprocessingRecord):
    """The part of the record that runs on whole batches ``(..., S, S, 3)``: version 2's gray world."""
    if not finishes_batches(record):
        return images
    from .colour import gray_world_tf

    return gray_world_tf(images)


def preprocess_tf(image, record: PreprocessingRecord, *, crop: bool = True):
    """Apply ``record`` to one decoded (H, W, 3) uint8 image; returns float32 (S, S, 3) in [0, 255].

    ``crop=False`` applies only the colour step, to the whole image (the training pipeline crops and
    resizes after geometric augmentation, with :func:`resize_tf`); version 2 takes the gray-world means
    from the central crop, the region the encoder sees.
    """
    import tensorflow as tf

    if crop:
        return finish_batch_tf(prepare_image_tf(image, record), record)
    x = tf.cast(image, tf.float32)
    if record.colour == "none":
        return x
    from .colour import gray_world_tf

    return gray_world_tf(x, None if record.version == 1 else central_crop_tf(x, record.crop_fraction))


def preprocess_bytes_tf(data, record: PreprocessingRecord):
    """Encoded image bytes → (S, S, 3) float32 encoder input: :func:`prepare_bytes_tf`, then the batch step."""
    return finish_batch_tf(prepare_bytes_tf(data, record), record)


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
        raise _undecodable(bad, probe(bad))
    return np.concatenate(chunks)


def refuse_unusable(paths: Sequence[str | os.PathLike]) -> None:
    """:func:`load_inputs`' error for the first file whose header already shows it unusable (not an image, a
    decompression bomb, too small), raised before TensorFlow loads to decode the others."""
    from .imageio import probe

    for path in map(str, paths):
        info = probe(path)
        if not info.ok:
            raise _undecodable(path, info)


def _undecodable(path: str, info: ImageInfo) -> InputError:
    return InputError(f"{path}: {info.error if not info.ok else 'cannot decode image'} "
                      "(check the images with hemoembed check)")
