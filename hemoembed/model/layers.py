"""Small serialisable Keras layers (no ``Lambda``: safe-mode loading must work)."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="hemoembed")
class L2Normalize(keras.layers.Layer):
    """Scale each row to unit L2 norm (computed in float32 for mixed precision)."""

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), self.epsilon))
        return x / norm

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="hemoembed")
class PreprocessingSpec(keras.layers.Layer):
    """Identity layer whose config carries the encoder's preprocessing record inside the .keras file."""

    def __init__(self, record: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.record = dict(record or {})

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "record": self.record}


@keras.saving.register_keras_serializable(package="hemoembed")
class ReinhardNormalization(keras.layers.Layer):
    """Reinhard colour transfer of float RGB [0, 255] batches to fixed lαβ ``mean``/``std`` (a site adapter).

    Lives inside an adapted encoder so ``embed``/``predict`` see a new site's images in the source style.
    """

    def __init__(self, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def call(self, inputs):
        from ..data.colour import reinhard_normalize_tf

        return reinhard_normalize_tf(inputs, self.mean, self.std)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="hemoembed")
class GrayWorld(keras.layers.Layer):
    """Gray-world white balance of float RGB [0, 255] batches, per image (see ``data.colour.gray_world_tf``)."""

    def call(self, inputs):
        from ..data.colour import gray_world_tf

        return gray_world_tf(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
