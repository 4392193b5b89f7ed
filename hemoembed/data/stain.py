"""Stain jitter in HED space (Tellez et al. 2018): vary how much of each dye an image holds, not its hue.

Colour is label information in blood films (eosinophil granules, basophils), so rotating hue is a blunt
augmentation; a new site differs mostly in how strongly each dye took. The RGB image is turned into optical
densities (Beer–Lambert: ``od = −ln(rgb / 255)``), projected onto three stain vectors (Ruifrok & Johnston's
haematoxylin, eosin and DAB, the matrix scikit-image's ``rgb2hed`` uses), each stain's concentration ``c`` is
perturbed to ``c · α + β`` with ``α ~ U[1 − σ, 1 + σ]`` and ``β ~ U[−σ, σ]`` per image and stain, and the
result is turned back into RGB. May-Grünwald-Giemsa is not H&E, but its two main dyes (a basic blue and
the acid eosin) lie close to the haematoxylin and eosin vectors.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from .augment import RandomImageLayer

# rows: the RGB optical-density direction of haematoxylin, eosin and DAB (Ruifrok & Johnston 2001)
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float64)
RGB_FROM_HED = RGB_FROM_HED / np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


@keras.saving.register_keras_serializable(package="hemoembed")
class StainJitter(RandomImageLayer):
    """Random per-image scaling and shift of the H, E and D stain concentrations of float RGB in [0, 255]."""

    def __init__(self, sigma: float = 0.05, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sigma, self.seed = float(sigma), seed
        self.generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, images: Any, training: bool = True, seed: Any = None) -> Any:
        """Per-image (B, 6): three scales α then three shifts β."""
        unit = keras.random.uniform((ops.shape(images)[0], 6), seed=self.generator if seed is None else seed)
        return ops.concatenate([1.0 + self.sigma * (2.0 * unit[:, :3] - 1.0),
                                self.sigma * (2.0 * unit[:, 3:] - 1.0)], axis=1)

    def transform_images(self, images: Any, transformation: Any, training: bool = True) -> Any:
        x = ops.cast(images, "float32")
        od = -ops.log(ops.maximum(x, 1.0) / 255.0)
        stains = ops.einsum("bhwc,cs->bhws", od, ops.convert_to_tensor(HED_FROM_RGB, "float32"))
        t = ops.reshape(ops.cast(transformation, "float32"), (-1, 1, 1, 6))
        stains = stains * t[..., :3] + t[..., 3:]
        od = ops.einsum("bhws,sc->bhwc", stains, ops.convert_to_tensor(RGB_FROM_HED, "float32"))
        return ops.clip(255.0 * ops.exp(-od), 0.0, 255.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sigma": self.sigma, "seed": self.seed}
