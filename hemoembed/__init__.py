"""hemoembed: self-supervised leukocyte embeddings and few-label tasks on them.

``import hemoembed`` is light: every name below loads its module (and TensorFlow, scikit-learn, openTSNE...)
on first use. Keras layers and losses are registered as soon as Keras loads, so a saved encoder loads with
``keras.saving.load_model(path, safe_mode=True)`` after ``import hemoembed`` (see :mod:`hemoembed._quiet`).
The README's "Python API" section shows a whole workflow.
"""
from ._version import __version__
from .errors import HemoembedError, InputError, MismatchError
from .lazy import lazy_attributes

# name -> module that defines it; the module is imported on first use of the name.
_LAZY = {
    # images, manifests, colour
    "Manifest": "hemoembed.data.manifest",
    "load_manifest": "hemoembed.data.manifest",
    "load_image": "hemoembed.data.imageio",
    "load_images": "hemoembed.data.imageio",
    "PreprocessingRecord": "hemoembed.data.preprocess",
    "load_inputs": "hemoembed.data.preprocess",
    "ReinhardReference": "hemoembed.data.colour",
    "gray_world": "hemoembed.data.colour",
    "reinhard_normalize": "hemoembed.data.colour",
    "AugmentConfig": "hemoembed.data.augment_config",
    "multi_view_dataset": "hemoembed.data.pipeline",
    "inference_dataset": "hemoembed.data.pipeline",
    "make_synthetic_dataset": "hemoembed.data.synthetic",
    "structured_embeddings": "hemoembed.data.synthetic_embeddings",
    # the encoder and its training
    "build_encoder": "hemoembed.model.encoder",
    "load_encoder": "hemoembed.model.encoder",
    "save_encoder": "hemoembed.model.encoder",
    "TripletHardLoss": "hemoembed.model.losses",
    "TripletSemiHardLoss": "hemoembed.model.losses",
    "triplet_hard_loss": "hemoembed.model.losses",
    "triplet_semihard_loss": "hemoembed.model.losses",
    "PretrainConfig": "hemoembed.model.pretrain",
    "pretrain": "hemoembed.api",
    "PretrainResult": "hemoembed.model.pretrain",
    # the store
    "EmbeddingStore": "hemoembed.store.store",
    "embed": "hemoembed.store.build",
    "embed_images": "hemoembed.store.embed",
    "knn": "hemoembed.store.neighbors",
    # tasks
    "EmbeddingSVM": "hemoembed.tasks.svm",
    "load_svm": "hemoembed.tasks.svm",
    "evaluate": "hemoembed.tasks.common",
    "nested_support_sets": "hemoembed.tasks.common",
    "select_shots": "hemoembed.tasks.common",
    "BaselineConfig": "hemoembed.tasks.baseline",
    "train_baseline": "hemoembed.tasks.baseline",
    "IncrementalLinearSVM": "hemoembed.tasks.active",
    "fit_power_law": "hemoembed.tasks.active",
    "LabellingSession": "hemoembed.tasks.active",
    "ActiveLearner": "hemoembed.tasks.active",
    "SiteAdapter": "hemoembed.tasks.adapt",
    "run_ablation": "hemoembed.tasks.adapt",
    # explanations
    "TsneMap": "hemoembed.explain.tsne",
    "TsneConfig": "hemoembed.explain.tsne",
    "explain_pair": "hemoembed.explain.gradcam",
    "explain_triplet": "hemoembed.explain.gradcam",
    "explain_class": "hemoembed.explain.gradcam",
    "render_gallery": "hemoembed.explain.gallery",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [*_LAZY, "__version__", "HemoembedError", "InputError", "MismatchError"]

from ._quiet import install as _install  # noqa: E402

_install()
