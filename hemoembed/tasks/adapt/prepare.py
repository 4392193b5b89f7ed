"""What ``hemoembed adapt`` and its study start from: the settings, the source encoder and colour style, the
target site's images with labels mapped to source class names, and labelled source embeddings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...data.manifest import Manifest
from ...data.preprocess import PreprocessingRecord, load_inputs
from ...errors import InputError
from ...progress import ProgressFactory, stage
from ..common.labels import manifest_labels
from ..common.sampling import per_class_sample
from .site import match_classes, read_class_map, resolve_source, source_reference, usable_classes

if TYPE_CHECKING:
    from .adapter import SiteExperiment

# name → (mode, colour transform, source pretraining, source support); "no_adaptation" is the source SVM
CONDITIONS: dict[str, tuple[str, bool, bool, bool]] = {
    "scratch": ("finetune", True, False, False),
    "no_adaptation": ("source", False, True, False),
    "head_only": ("head", True, True, False),
    "svm": ("svm", True, True, False),
    "mixed": ("svm", True, True, True),
    "no_colour": ("finetune", False, True, False),
    "full": ("finetune", True, True, False),
}


CURVE_SHOTS = (10, 20, 30, 45, 60, 75, 90, 100)


@dataclass
class AdaptConfig:
    """Settings of one ``hemoembed adapt`` run, saved as ``adapt_config.json`` next to its outputs."""

    source: str = ""
    target: str = ""
    image_root: str = ""
    allow_outside_root: bool = False  # manifest paths (target and source images) may lie outside their root
    labels: str = ""
    label_column: str = "label"
    source_images: str = ""
    class_map: str = ""
    shots: int = 100
    min_per_class: int = 2
    mode: str = "svm"
    save_encoder: str = "reference"  # svm/head: encoder.json (reference) or encoder.keras (copy); see workflow
    colour_transform: bool = True
    source_support: int = 0
    source_per_class: int = 100  # source images per class embedded for support and the source classifier
    lr: list[float] = field(default_factory=lambda: [1e-4, 1e-3])
    epochs: list[int] = field(default_factory=lambda: [5, 10])
    batch_size: list[int] = field(default_factory=lambda: [16])
    cv: int = 3
    label_smoothing: float = 0.1
    # finetune: start the head from a fit on the frozen embeddings (LP-FT). BCCD, 100 shots, 5 repeats: full
    # adapter 0.719 ± 0.057 accuracy with it, 0.582 ± 0.244 without (2 of 5 random-head runs collapsed)
    warm_head: bool = True
    head_epochs: int = 200
    embed_batch_size: int = 64
    n_bootstrap: int = 1000
    ablation: bool = False
    repeats: int = 10
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    curve_shots: list[int] = field(default_factory=list)
    curve_mode: str = "svm"
    seed: int = 0


@dataclass
class Prepared:
    """A target site and source ready to adapt (labels mapped to source class names)."""

    adapter: SiteExperiment
    manifest: Manifest  # the labelled target images kept (classes with ≥ 3 images after mapping)
    record: PreprocessingRecord  # the adapted encoder's record (colour is done inside the model)
    labels: list[str]
    notes: dict[str, Any]
    support: tuple[np.ndarray, np.ndarray] | None = None


def prepare(config: AdaptConfig, progress: ProgressFactory | None = None) -> Prepared:
    """Load source encoder, colour reference, target images and labels, and source support embeddings (the
    files, labels and classes are checked first: TensorFlow loads with the encoder, once they hold)."""
    from ...data.manifest import load_manifest

    encoder_path, run_dir = resolve_source(config.source)
    target = load_manifest(config.target, config.image_root or None, config.allow_outside_root)
    raw = manifest_labels(target, config.labels, config.label_column)
    src = load_manifest(config.source_images, None, config.allow_outside_root) if config.source_images else None
    src_labels = src.labels if src is not None else None
    mapping = read_class_map(config.class_map) if config.class_map else None
    usable, missing = match_classes([v for v in raw if v], sorted(set(src_labels)) if src_labels else None, mapping)
    mapped = [usable.get(v, "") for v in raw]
    rows, too_small = usable_classes(mapped)
    if len({mapped[i] for i in rows}) < 2:
        raise InputError(f"{config.target}: fewer than 2 target classes with ≥ 3 labelled images after class mapping "
                         f"(target-only classes: {missing['target_only']}, too small: {too_small})")
    need_ref = config.colour_transform or config.ablation
    reference, origin = source_reference(run_dir, src, seed=config.seed) if need_ref else (None, "")
    from ...model.encoder import load_encoder
    from ...store.embed import embed_images
    from .adapter import SiteExperiment

    source, record = load_encoder(encoder_path)
    target = target.subset(rows)
    mapped = [mapped[i] for i in rows]
    new_record = record.without_colour()
    with stage(progress, len(target), "reading target") as advance:
        images = load_inputs(target.absolute(), new_record, config.embed_batch_size)
        advance(len(target))
    adapter = SiteExperiment(source, record, reference, images, mapped, batch_size=config.embed_batch_size)
    notes = {"class_mapping": usable, "missing_classes": missing, "too_few_images": too_small,
             "colour_reference": None if reference is None else reference.to_dict(), "reference_from": origin,
             "source_encoder": str(encoder_path)}
    support = None
    if src_labels and (config.source_support or config.ablation):
        idx = per_class_sample(src_labels, config.source_per_class, np.random.default_rng([config.seed, 5]),
                               classes=set(usable.values()))
        with stage(progress, len(idx), "embedding source") as advance:
            X, ok = embed_images(source, record, [src.absolute()[i] for i in idx], config.embed_batch_size, advance)
        support = (X, np.asarray([src_labels[idx[i]] for i in ok]))
    return Prepared(adapter, target, new_record, mapped, notes, support)


def support_subset(support: tuple[np.ndarray, np.ndarray], per_class: int, seed: int):
    """``per_class`` labelled source embeddings of each class, drawn with ``seed``."""
    idx = per_class_sample(support[1], per_class, np.random.default_rng([seed, 9]))
    return support[0][idx], support[1][idx]


def finetune_grid(config: AdaptConfig) -> dict[str, list]:
    return {"lr": list(config.lr), "epochs": list(config.epochs), "batch_size": list(config.batch_size)}


