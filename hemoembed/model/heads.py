"""Projection heads: small networks between the encoder and the loss, never part of ``encoder.keras``.

SimCLR (Chen et al. 2020, Fig. 8 and §4.2) found that computing the contrastive loss on ``g(h)``, a
non-linear MLP of the representation ``h``, and keeping ``h`` itself improves linear evaluation by more
than 10 points over using ``h`` in the loss: the head can discard what the loss does not need (e.g. the
augmentation's colour or orientation) while ``h`` keeps it. The stored embedding therefore stays the
encoder's L2-normalised 1280-d output; the head is trained with it and thrown away.

A head is written ``none`` or ``mlp:W1,W2,...,OUT``: hidden Dense layers of widths ``W1 ...`` each followed
by BatchNormalization and ReLU, then a linear Dense of ``OUT`` units (SimCLR v1's shape: one hidden layer;
``mlp:512,128`` by default here).
"""
from __future__ import annotations

from typing import Any

import keras

from ..errors import InputError
from .options import parse_head


@keras.saving.register_keras_serializable(package="hemoembed")
class ProjectionHead(keras.layers.Layer):
    """MLP projection ``g``: (Dense → BatchNorm → ReLU) per hidden width, then a linear Dense output."""

    def __init__(self, units: tuple[int, ...] | list[int] = (512, 128), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        if not self.units:
            raise InputError("projection head: needs at least one layer width")
        self.hidden = []
        for i, width in enumerate(self.units[:-1]):
            self.hidden += [keras.layers.Dense(width, use_bias=False, name=f"dense_{i}"),
                            keras.layers.BatchNormalization(name=f"bn_{i}"),
                            keras.layers.ReLU(name=f"relu_{i}")]
        self.output_layer = keras.layers.Dense(self.units[-1], name="projection")

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        for layer in self.hidden:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.output_layer.build(shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = inputs
        for layer in self.hidden:
            x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
        return self.output_layer(x)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*tuple(input_shape)[:-1], self.units[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": list(self.units)}


def build_head(spec: str, input_dim: int) -> keras.Layer | None:
    """The head for ``spec`` built for ``input_dim``-d inputs, or ``None`` for ``none``."""
    units = parse_head(spec)
    if not units:
        return None
    head = ProjectionHead(units, name="projection_head")
    head.build((None, int(input_dim)))
    return head
