"""Small serialisable Keras layers (no ``Lambda``: safe-mode loading must work)."""
from __future__ import annotations

import keras
from keras import ops


def unit_rows(x, epsilon: float = 1e-12):
    """Each row of ``x`` scaled to unit L2 norm (rows of norm below √epsilon are scaled by 1/√epsilon)."""
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))


@keras.saving.register_keras_serializable(package="hemoembed")
class L2Normalize(keras.layers.Layer):
    """Scale each row to unit L2 norm (computed in float32 for mixed precision)."""

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        return unit_rows(ops.cast(inputs, "float32"), self.epsilon)

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


# The dihedral group of a square image: identity or transpose, then no flip, either flip or both (eight
# symmetries: four rotations by 90°, each mirrored or not). What the scratch preset's augmentation (flips,
# rotation ±90°) asks the encoder to ignore, and what a 4-epoch encoder has not yet learnt to ignore.
DIHEDRAL = tuple((transpose, axes) for transpose in (False, True) for axes in ((), (1,), (2,), (1, 2)))


def _swap_rows_and_columns(x):
    return ops.transpose(x, (0, 2, 1) + tuple(range(3, len(x.shape))))


def dihedral_views(images):
    """``(n, s, s, ...)`` → ``(8n, s, s, ...)``: the eight symmetries of every square image, view after view."""
    views = []
    for transpose, axes in DIHEDRAL:
        x = _swap_rows_and_columns(images) if transpose else images
        views.append(ops.flip(x, axes) if axes else x)
    return ops.concatenate(views, axis=0)


def undo_dihedral_views(maps):
    """``(8n, h, w, ...)`` maps computed on :func:`dihedral_views`' images → ``(8, n, h, w, ...)``, each turned
    back to its image's own orientation (each symmetry is undone by flipping, then transposing)."""
    size = ops.shape(maps)[0] // len(DIHEDRAL)
    back = []
    for i, (transpose, axes) in enumerate(DIHEDRAL):
        x = maps[i * size:(i + 1) * size]
        x = ops.flip(x, axes) if axes else x
        back.append(_swap_rows_and_columns(x) if transpose else x)
    return ops.stack(back)


@keras.saving.register_keras_serializable(package="hemoembed")
class DihedralViews(keras.layers.Layer):
    """Inference: every square image becomes its eight dihedral views (``(n, s, s, c)`` → ``(8n, s, s, c)``),
    to be averaged back by :class:`ViewAverage` after the encoder. Training: the identity (the augmentation
    already draws the symmetries), so a trained encoder computes the same loss with or without this layer."""

    def call(self, inputs, training=None):
        return inputs if training else dihedral_views(inputs)

    def compute_output_shape(self, input_shape):
        return (None,) + tuple(input_shape[1:])


@keras.saving.register_keras_serializable(package="hemoembed")
class ViewAverage(keras.layers.Layer):
    """Inference: the mean of each image's ``views`` unit embeddings (``(views·n, d)`` → ``(n, d)``, view after
    view as :class:`DihedralViews` lays them out), scaled back to unit length. Training: the identity."""

    def __init__(self, views: int = len(DIHEDRAL), epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.views, self.epsilon = int(views), float(epsilon)

    def call(self, inputs, training=None):
        if training:
            return inputs
        x = ops.cast(inputs, "float32")
        return unit_rows(ops.mean(ops.reshape(x, (self.views, -1, x.shape[-1])), axis=0), self.epsilon)

    def compute_output_shape(self, input_shape):
        return (None,) + tuple(input_shape[1:])

    def get_config(self) -> dict:
        return {**super().get_config(), "views": self.views, "epsilon": self.epsilon}
