"""hemoembed: self-supervised leukocyte embeddings and few-label tasks on them.

Importing the package registers its Keras layers and losses, so a saved encoder loads with
``keras.saving.load_model(path, safe_mode=True)`` after ``import hemoembed``.
"""
from ._quiet import import_tensorflow_quietly as _import_tf
from ._version import __version__

_import_tf()
from .data.colour import ReinhardReference, gray_world, reinhard_normalize
from .data.imageio import load_image, load_images
from .data.manifest import Manifest, load_manifest
from .data.preprocess import PreprocessingRecord
from .errors import HemoembedError, InputError, MismatchError
from .model import layers as _layers  # noqa: F401  (registers serialisable layers)
from .model.encoder import build_encoder, load_encoder, save_encoder
from .model.losses import TripletHardLoss, TripletSemiHardLoss, triplet_hard_loss, triplet_semihard_loss

__all__ = [
    "__version__",
    "HemoembedError",
    "InputError",
    "Manifest",
    "MismatchError",
    "PreprocessingRecord",
    "ReinhardReference",
    "TripletHardLoss",
    "TripletSemiHardLoss",
    "build_encoder",
    "gray_world",
    "load_encoder",
    "load_image",
    "load_images",
    "load_manifest",
    "reinhard_normalize",
    "save_encoder",
    "triplet_hard_loss",
    "triplet_semihard_loss",
]
