"""Augmentation strengths: :class:`AugmentConfig`, checked without loading Keras.

A pretraining configuration is validated before TensorFlow loads (a wrong ``--crop-scale`` is an error at
once); the Keras layers that apply these strengths are in :mod:`.augment`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass
class AugmentConfig:
    """Augmentation strengths; 0 (or False) switches a transformation off."""

    flip: bool = True
    rotation: float = 0.25  # fraction of a full turn: 0.25 = ±90°
    zoom: float = 0.1
    translation: float = 0.09  # fraction of the side: ±20 px at 224 px
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.2  # fraction of the colour circle, at most 0.5
    fill_mode: str = "reflect"
    resolution: float = 0.0  # degradation: down-sample by up to this fraction of the side and back up (0 = off)
    crop_scale: tuple[float, float] | None = None  # random-resized crop: (min, max) share of the area; None = off
    crop_ratio: tuple[float, float] = (0.75, 4 / 3)  # its aspect-ratio range (width / height)
    stain: float = 0.0  # HED stain jitter strength (Tellez et al. 2018's sigma; 0 = off)

    def __post_init__(self) -> None:
        for name in ("rotation", "zoom", "translation", "brightness", "contrast", "saturation", "resolution"):
            value = float(getattr(self, name))
            if not 0.0 <= value < 1.0:
                raise InputError(f"augmentation {name} {value} is outside [0, 1)")
        if not 0.0 <= float(self.hue) <= 0.5:
            raise InputError(f"augmentation hue {self.hue} is outside [0, 0.5] (a fraction of the colour circle)")
        if self.fill_mode not in ("reflect", "wrap", "constant", "nearest"):
            raise InputError(f"augmentation fill mode {self.fill_mode!r} is not reflect, wrap, constant or nearest")
        if isinstance(self.crop_scale, str) and self.crop_scale.strip().lower() in ("none", ""):
            self.crop_scale = None
        if self.crop_scale is not None:
            self.crop_scale = _range(self.crop_scale, "crop scale", 0.0, 1.0)
        self.crop_ratio = _range(self.crop_ratio, "crop aspect ratio", 0.0, 100.0)
        if not 0.0 <= float(self.stain) < 1.0:
            raise InputError(f"augmentation stain {self.stain} is outside [0, 1)")


def _range(value, name: str, low: float, high: float) -> tuple[float, float]:
    """A (min, max) pair with low < min <= max <= high, or a one-line error."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"augmentation {name} {value!r}: expected two numbers MIN,MAX") from None
    if not low < lo <= hi <= high:
        raise InputError(f"augmentation {name} {lo:g},{hi:g}: need {low:g} < MIN <= MAX <= {high:g}")
    return lo, hi
