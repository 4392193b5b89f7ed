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
