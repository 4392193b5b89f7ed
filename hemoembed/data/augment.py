"""Training augmentation: Keras core random layers plus a registered colour-jitter layer, on batches.

The paper's defaults: random horizontal and vertical flips, rotation ±90° (``RandomRotation(0.25)``), zoom
±0.1, translation ±20 px at 224 px (a fraction 0.09 of the side), colour jitter 0.2 for brightness,
contrast, saturation and hue (hue as a fraction of the colour circle, as in torchvision).

From-scratch recipes (the ``scratch`` preset) add a random-resized crop (:class:`RandomResizedCrop`: a box
of a random share of the area and aspect ratio, resized to the encoder's input — the augmentation SimCLR
found most important), weaker hue jitter (colour carries cell-type information: eosinophil and basophil
granules) and optionally stain jitter in HED space (:mod:`.stain`).

Randomness is stateless: :func:`augment_batch` draws every random number from a seed tensor given with
the batch (derived from the run seed, the epoch and the batch number), so a batch is augmented the same
way in an uninterrupted run and in a resumed one, whatever the tf.data parallelism.
"""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ..errors import InputError
from .augment_config import AugmentConfig


class RandomImageLayer(keras.layers.Layer):
    """Base of the project's random image layers: ``get_random_transformation`` + ``transform_images``,
    the two-method protocol of Keras's image layers that :func:`augment_batch` drives with its own seeds."""

    def call(self, inputs: Any, training: bool = True) -> Any:
        if not training:
            return inputs
        return self.transform_images(inputs, self.get_random_transformation(inputs))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@keras.saving.register_keras_serializable(package="hemoembed")
class ColourJitter(RandomImageLayer):
    """Random brightness, contrast, saturation and hue per image, like torchvision's ``ColorJitter``.

    Inputs are float RGB batches in [0, 255]. Factors are drawn per image: brightness/contrast/saturation
    uniformly in ``[1 − s, 1 + s]``, the hue shift uniformly in ``[−hue, hue]`` of the colour circle. The
    order is fixed (brightness, contrast, saturation, hue) where torchvision permutes it randomly.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.2, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, images: Any, training: bool = True, seed: Any = None) -> Any:
        """Per-image factors, shape (B, 4): brightness, contrast, saturation, hue shift."""
        seed = self.generator if seed is None else seed
        batch = ops.shape(images)[0]
        low = ops.convert_to_tensor([1 - self.brightness, 1 - self.contrast, 1 - self.saturation, -self.hue])
        high = ops.convert_to_tensor([1 + self.brightness, 1 + self.contrast, 1 + self.saturation, self.hue])
        unit = keras.random.uniform((batch, 4), seed=seed)
        return low + unit * (high - low)

    def transform_images(self, images: Any, transformation: Any, training: bool = True) -> Any:
        """Apply factors from :meth:`get_random_transformation` to float [0, 255] images."""
        x = ops.cast(images, "float32") / 255.0
        factor = ops.reshape(transformation, (-1, 1, 1, 1, 4))
        brightness, contrast, saturation, hue = (factor[..., i] for i in range(4))
        x = ops.clip(x * brightness, 0.0, 1.0)
        mean = ops.mean(_grey(x), axis=(1, 2, 3), keepdims=True)
        x = ops.clip(contrast * x + (1.0 - contrast) * mean, 0.0, 1.0)
        x = ops.clip(saturation * x + (1.0 - saturation) * _grey(x), 0.0, 1.0)
        if self.hue > 0:
            hsv = ops.image.rgb_to_hsv(x)
            shifted = ops.mod(hsv[..., :1] + hue, 1.0)
            x = ops.clip(ops.image.hsv_to_rgb(ops.concatenate([shifted, hsv[..., 1:]], axis=-1)), 0.0, 1.0)
        return x * 255.0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "brightness": self.brightness, "contrast": self.contrast,
                "saturation": self.saturation, "hue": self.hue, "seed": self.seed}


def _grey(x: Any) -> Any:
    """ITU-R 601 luma of RGB in [0, 1], keeping a channel axis of 1 (as torchvision)."""
    return 0.299 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]


def build_augmentation(config: AugmentConfig, output_size: int | None = None,
                       region: float = 1.0) -> list[keras.layers.Layer]:
    """The random layers for ``config``, in application order (geometry first, then colour).

    With ``config.crop_scale`` the random-resized crop is drawn inside the central ``region`` share of the
    image (the preprocessing record's crop) and resized to ``output_size``: it replaces the record's fixed
    central crop, so the caller must not crop again (see :func:`crops_to_output`).
    """
    from .stain import StainJitter

    layers: list[keras.layers.Layer] = []
    if config.flip:
        # two layers: Keras's "horizontal_and_vertical" draws one decision for both axes (a 180° turn)
        layers += [keras.layers.RandomFlip("horizontal"), keras.layers.RandomFlip("vertical")]
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode=config.fill_mode))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, config.zoom, fill_mode=config.fill_mode))
    if config.translation:
        layers.append(keras.layers.RandomTranslation(config.translation, config.translation,
                                                     fill_mode=config.fill_mode))
    if config.crop_scale is not None:
        if output_size is None:
            raise InputError("random-resized crop: the output size is needed")
        layers.append(RandomResizedCrop(output_size, config.crop_scale, config.crop_ratio, region))
    if config.resolution:
        layers.append(RandomResolution(config.resolution))
    if config.stain:
        layers.append(StainJitter(config.stain))
    if config.brightness or config.contrast or config.saturation or config.hue:
        layers.append(ColourJitter(config.brightness, config.contrast, config.saturation, config.hue))
    return layers


def crops_to_output(config: AugmentConfig) -> bool:
    """True when the augmentation itself produces the encoder's input size (a random-resized crop)."""
    return config.crop_scale is not None


@keras.saving.register_keras_serializable(package="hemoembed")
class RandomResizedCrop(RandomImageLayer):
    """A box of a random share of the area (``scale``) and aspect ratio (``ratio``, log-uniform), placed
    uniformly inside the central ``region`` share of each image's side, resized to ``size`` × ``size``.

    Like torchvision's ``RandomResizedCrop`` except that a box wider or taller than the region is clipped
    to it (torchvision retries ten times, then falls back to a central crop); ``scale`` (1, 1) is the fixed
    central crop of ``region``.
    """

    def __init__(self, size: int = 64, scale: tuple[float, float] = (0.3, 1.0),
                 ratio: tuple[float, float] = (0.75, 4 / 3), region: float = 1.0, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.region, self.seed = int(size), float(region), seed
        self.scale = tuple(float(v) for v in scale)
        self.ratio = tuple(float(v) for v in ratio)
        self.generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, images: Any, training: bool = True, seed: Any = None) -> Any:
        """Per-image boxes, shape (B, 4): ``y1, x1, y2, x2`` in normalised image coordinates."""
        import math

        seed = self.generator if seed is None else seed
        unit = keras.random.uniform((ops.shape(images)[0], 4), seed=seed)
        area = self.scale[0] + unit[:, 0] * (self.scale[1] - self.scale[0])
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = ops.exp(log_lo + unit[:, 1] * (log_hi - log_lo))
        width = ops.minimum(ops.sqrt(area * aspect), 1.0)
        height = ops.minimum(ops.sqrt(area / aspect), 1.0)
        top = unit[:, 2] * (1.0 - height)
        left = unit[:, 3] * (1.0 - width)
        start = (1.0 - self.region) / 2.0
        box = ops.stack([top, left, top + height, left + width], axis=1)
        return start + self.region * box

    def transform_images(self, images: Any, transformation: Any, training: bool = True) -> Any:
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        boxes = tf.cast(transformation, tf.float32)
        indices = tf.range(tf.shape(x)[0], dtype=tf.int32)
        return tf.image.crop_and_resize(x, boxes, indices, (self.size, self.size), method="bilinear")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "scale": list(self.scale), "ratio": list(self.ratio),
                "region": self.region, "seed": self.seed}


@keras.saving.register_keras_serializable(package="hemoembed")
class RandomResolution(RandomImageLayer):
    """Random resolution reduction: each image is down-sampled by a factor in ``[1 − factor, 1]`` and resized
    back, so a source of sharp CellaVision crops also sees blurrier cells like a new site's camera."""

    def __init__(self, factor: float = 0.5, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor, self.seed = float(factor), seed
        self.generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, images: Any, training: bool = True, seed: Any = None) -> Any:
        """Per-image scale factors, shape (B,)."""
        unit = keras.random.uniform((ops.shape(images)[0],), seed=self.generator if seed is None else seed)
        return 1.0 - self.factor * unit

    def transform_images(self, images: Any, transformation: Any, training: bool = True) -> Any:
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        size = tf.shape(x)[1:3]

        def one(args: Any) -> Any:
            image, scale = args
            small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
            return tf.image.resize(tf.image.resize(image, small, antialias=True), size)

        return tf.map_fn(one, (x, tf.cast(transformation, tf.float32)), fn_output_signature=tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


class _StreamSeed(keras.random.SeedGenerator):
    """A seed source with no state: the k-th draw is ``fold_in(seed, k)``, so results depend on the seed only."""

    def __init__(self, seed: Any) -> None:  # no super().__init__: no state variable is wanted
        import tensorflow as tf

        self._seed = tf.cast(seed, tf.int64)
        self._count = 0

    def next(self, ordered: bool = True) -> Any:
        import tensorflow as tf

        self._count += 1
        return tf.cast(tf.random.experimental.stateless_fold_in(self._seed, self._count) % 2**31, tf.int32)


def augment_batch(images: Any, layers: list[keras.layers.Layer], seed: Any) -> Any:
    """Augment a float (B, H, W, 3) batch in [0, 255] with ``layers``, every draw derived from ``seed``.

    ``seed`` is an integer tensor of shape (2,). Each image gets its own random parameters (the layers are
    vectorised over the batch); the same seed and images always give the same output.
    """
    stream = _StreamSeed(seed)
    x = images
    for layer in layers:
        transformation = layer.get_random_transformation(x, training=True, seed=stream)
        x = layer.transform_images(x, transformation, training=True)
    return ops.clip(x, 0.0, 255.0)
