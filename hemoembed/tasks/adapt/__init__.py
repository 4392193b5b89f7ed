"""A new site with few labels (``adapt``): Reinhard colour transfer to the source style, then an SVM, a
softmax head or fine-tuning on class-balanced shots; the ablation study and the shot-count curve.

The settings, the class matching and the run load without TensorFlow, so ``adapt`` checks its files,
labels and classes first; the Keras side (:mod:`.adapter`, :mod:`.estimator`) loads on first use of its
names (:mod:`hemoembed.lazy`).
"""
from typing import TYPE_CHECKING

from ...lazy import lazy_attributes
from .prepare import CONDITIONS, CURVE_SHOTS, AdaptConfig, Prepared, prepare
from .site import match_classes, read_class_map, resolve_source, source_reference
from .study import ablation_table, domain_separability, run_ablation, shot_curve, write_study
from .workflow import run

if TYPE_CHECKING:
    from .adapter import (
        MODES,
        FinetuneParams,
        Outcome,
        SiteExperiment,
        adapted_encoder,
        choose_params,
        finetune,
        fit_head,
    )
    from .estimator import SiteAdapter

__getattr__ = lazy_attributes(__name__, {
    **dict.fromkeys(("MODES", "FinetuneParams", "Outcome", "SiteExperiment", "adapted_encoder", "choose_params",
                     "finetune", "fit_head"), f"{__name__}.adapter"),
    "SiteAdapter": f"{__name__}.estimator",
})

__all__ = [
    "AdaptConfig", "CONDITIONS", "CURVE_SHOTS", "FinetuneParams", "MODES", "Outcome", "Prepared", "SiteAdapter",
    "SiteExperiment", "ablation_table", "adapted_encoder", "choose_params", "domain_separability", "finetune",
    "fit_head", "match_classes", "prepare", "read_class_map", "resolve_source", "run", "run_ablation",
    "shot_curve", "source_reference", "write_study",
]
