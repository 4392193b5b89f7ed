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

# Heavier parts (pyarrow, scikit-learn, openTSNE, modAL) load on first use of their names.
_LAZY = {
    "EmbeddingStore": "hemoembed.store.store",
    "embed_images": "hemoembed.store.embed",
    "knn": "hemoembed.store.neighbors",
    "PretrainConfig": "hemoembed.model.pretrain",
    "pretrain": "hemoembed.model.pretrain",
    "AugmentConfig": "hemoembed.data.augment",
    "two_view_dataset": "hemoembed.data.pipeline",
    "inference_dataset": "hemoembed.data.pipeline",
    "make_synthetic_dataset": "hemoembed.data.synthetic",
    "EmbeddingSVM": "hemoembed.tasks.svm",
    "load_svm": "hemoembed.tasks.svm",
    "evaluate": "hemoembed.tasks.common",
    "nested_support_sets": "hemoembed.tasks.common",
    "BaselineConfig": "hemoembed.tasks.baseline",
    "train_baseline": "hemoembed.tasks.baseline",
    "IncrementalLinearSVM": "hemoembed.tasks.active",
    "fit_power_law": "hemoembed.tasks.active",
    "LabellingSession": "hemoembed.tasks.active",
    "SiteAdapter": "hemoembed.tasks.adapt",
    "select_shots": "hemoembed.tasks.common",
    "run_ablation": "hemoembed.tasks.adapt",
    "TsneMap": "hemoembed.explain.tsne",
    "explain_pair": "hemoembed.explain.gradcam",
    "explain_triplet": "hemoembed.explain.gradcam",
    "explain_class": "hemoembed.explain.gradcam",
    "render_gallery": "hemoembed.explain.gallery",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hemoembed' has no attribute {name!r}")


__all__ = [*_LAZY,
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
