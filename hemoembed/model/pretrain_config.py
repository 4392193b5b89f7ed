"""Pretraining settings: the typed :class:`PretrainConfig`, its presets, and how a run's saved config is read.

Three presets. ``imagenet`` is the paper's fine-tuning recipe for an ImageNet-initialised encoder (semi-hard
triplet, no head, BatchNorm frozen, Adam 1e-5, the paper's augmentation). ``scratch`` is for random
initialisation (``--weights none``: air-gapped sites, CPU machines); its values were chosen by the ablation
in benchmarks/RESULTS.md ("Choosing the scratch recipe"), where each lever was switched on and off at equal
CPU budget on 6,000 PBC images. ``site`` continues a trained encoder (``--weights PATH``) on a new site's
unlabelled cells before ``hemoembed adapt``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import from_dict, load_config, read_json_object
from ..data.augment_config import AugmentConfig
from ..data.preprocess import RECORD_VERSION, PreprocessingRecord
from ..errors import InputError
from .options import WEIGHTS_KINDS, check_temperature, check_view_average, parse_head

# The paper's augmentation: flips, rotation ±90°, zoom ±0.1, translation ±20 px at 224, colour jitter 0.2.
PAPER_AUGMENT: dict[str, Any] = {}
# Stain jitter instead of hue (benchmarks/RESULTS.md, "Stain jitter instead of hue, and more views"): 4 epochs on
# 6,000 PBC images, linear probe +0.013 and +0.024 over hue 0.05 for training seeds 0 and 1.
SCRATCH_AUGMENT: dict[str, Any] = {"zoom": 0.0, "translation": 0.0, "crop_scale": (0.3, 1.0), "brightness": 0.3,
                                   "contrast": 0.3, "saturation": 0.3, "hue": 0.0, "stain": 0.05}
# Across sites colour is what differs: hue jitter 0.2 in a site continuation (benchmarks/RESULTS.md, "Colour
# jitter in the site continuation" and "Seen, or how many"): BCCD's full adapter, 100 shots, +3.2 and +3.6 points
# over the scratch augmentation's continuation (two seeds); on halves of BCCD +0.7 to +1.6 over none.
SITE_AUGMENT: dict[str, Any] = {**SCRATCH_AUGMENT, "hue": 0.2}
PRESETS: dict[str, dict[str, Any]] = {
    # The paper: ImageNet initialisation, BatchNorm frozen, Adam 1e-5 constant, 30 epochs, batch 100.
    "imagenet": {"weights": "imagenet", "loss": "semihard", "head": "none", "lr": 1e-5, "lr_decay": "constant",
                 "warmup_epochs": 0.0, "freeze_bn": True, "epochs": 30, "batch_size": 100,
                 "view_average": "none", "augment": PAPER_AUGMENT},
    # Random initialisation: NT-Xent on a projection head, random-resized crops, stain jitter, BatchNorm
    # training, constant Adam 1e-3 (benchmarks/RESULTS.md, "Choosing the scratch recipe": 4 epochs on 6,000
    # PBC images, linear probe macro-F1 0.832 vs 0.754 with semi-hard triplet, 0.797 with cosine decay and
    # 0.703 with a one-epoch warm-up + cosine). 16 epochs on all PBC ("The full run"): 0.913 on that probe,
    # still rising at the end (a cosine decay over a long schedule was not compared; a constant LR lets
    # --resume --epochs train a finished run longer). The stored encoder averages each image's eight dihedral
    # views ("Averaging the dihedral views": +0.075 and +0.086 on that probe at 4 epochs, training unchanged).
    "scratch": {"weights": "none", "loss": "ntxent", "head": "mlp:512,128", "lr": 1e-3, "lr_decay": "constant",
                "warmup_epochs": 0.0, "freeze_bn": False, "epochs": 60, "batch_size": 128,
                "view_average": "dihedral", "augment": SCRATCH_AUGMENT},
}
# A trained encoder (--weights PATH, required) continued on a new site's unlabelled cells (mixed with about 1,000
# source images), for `hemoembed adapt` only: its hue invariance drops the colour a source SVM relies on (BCCD: the
# PBC SVM fell to 0.05-0.28 accuracy). Otherwise scratch's recipe; 10 epochs: 30 gave nothing more (-0.004 with
# the scratch augmentation).
PRESETS["site"] = {**{k: v for k, v in PRESETS["scratch"].items() if k != "weights"}, "epochs": 10,
                   "augment": SITE_AUGMENT}
# What a run saved before a setting existed meant (so it resumes, and its config reads, unchanged): a run
# from before preprocessing record versions (#18) keeps version 1, its checkpoints' and cache's meaning.
# A run from before --view-average stored the plain encoder.
LEGACY = {"loss": "semihard", "head": "none", "augment": PAPER_AUGMENT, "record_version": 1, "view_average": "none"}
# Settings that do not change training (view averaging is applied only to the stored encoder and the probe).
RESUME_IGNORES = ("tensorboard", "keep_checkpoints", "probe_labels", "probe_every", "view_average")


def resume_ignores(config: PretrainConfig) -> tuple[str, ...]:
    """Settings a resumed run may change. With a constant learning rate the schedule does not depend on the
    number of epochs until its cool-down, so ``--epochs`` and ``--cooldown`` may change while no trained epoch
    lies in either schedule's cool-down (:func:`check_schedule_continues`): a run stopped at N epochs and
    resumed to M equals an uninterrupted M-epoch run (a cosine schedule's every step depends on the total, so
    there they may not)."""
    return RESUME_IGNORES + (("epochs", "cooldown") if config.lr_decay == "constant" else ())


def cooldown_start(config: PretrainConfig) -> float:
    """The epoch (a real number) where a constant learning rate starts its cool-down; ``epochs`` without one."""
    return config.epochs * (1.0 - config.cooldown) if config.lr_decay == "constant" else float(config.epochs)


def check_schedule_continues(saved: PretrainConfig, current: PretrainConfig, trained: int, where: str) -> None:
    """Refuse to resume ``trained`` epochs under a changed length or cool-down once the learning rate of either
    schedule had begun to fall: the resumed run would not equal an uninterrupted one."""
    if (saved.epochs, saved.cooldown) == (current.epochs, current.cooldown) or saved.cooldown == current.cooldown == 0:
        return
    start = min(cooldown_start(saved), cooldown_start(current))
    if trained > start + 1e-9:
        raise InputError(f"{where}: {trained} epochs are trained, but the learning rate's cool-down starts after "
                         f"epoch {start:g} (--epochs {saved.epochs} --cooldown {saved.cooldown:g} saved, --epochs "
                         f"{current.epochs} --cooldown {current.cooldown:g} now); keep the saved --epochs and "
                         "--cooldown, or start a new run")


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. ``None`` fields are filled from the preset by :func:`resolve_config`."""

    preset: Literal["imagenet", "scratch", "site"] | None = None
    weights: str | None = None  # imagenet | none | PATH (.keras encoder, encoder.json reference, .h5)
    epochs: int | None = None
    batch_size: int | None = None  # distinct images per batch (each seen `views` times)
    views: int = 2  # augmented views of every image in a batch (NT-Xent: views - 1 positives per anchor)
    lr: float | None = None
    lr_decay: Literal["constant", "cosine"] | None = None
    warmup_epochs: float | None = None
    cooldown: float = 0.0  # share of the run, at its end, where a constant LR falls linearly to 0 (WSD)
    freeze_bn: bool | None = None
    image_size: int = 224
    crop_fraction: float = 0.875
    colour: Literal["grayworld", "none"] = "grayworld"
    record_version: int = RECORD_VERSION  # the preprocessing record's meaning (hemoembed.data.preprocess)
    loss: Literal["semihard", "hard", "ntxent", "dcl"] | None = None
    head: str | None = None  # projection head used only for the loss: none | mlp:W1,...,OUT
    margin: float = 0.5  # triplet losses
    distance: Literal["L2", "squared-L2", "angular"] = "L2"  # triplet losses
    temperature: float = 0.2  # NT-Xent and DCL
    weight_decay: float = 0.0  # decoupled (AdamW) when > 0
    dropout: float = 0.2
    drop_path: float = 0.2  # the backbone's stochastic depth at its last block (Keras' EfficientNetV2 default)
    val_fraction: float = 0.05
    early_stopping: int = 0  # patience in epochs on the validation loss; 0 = off
    lr_plateau: int = 0  # patience before the LR is multiplied by plateau_factor; 0 = off
    plateau_factor: float = 0.5
    strategy: Literal["auto", "one", "mirrored", "multiworker"] = "auto"
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit: bool = False
    eager: bool = False  # debugging: run steps eagerly (slow)
    cache: bool = False  # hold decoded, colour-normalised images in memory
    strict: bool = False  # refuse unreadable images instead of skipping them
    tensorboard: bool = False
    keep_checkpoints: int = 1  # resume needs only the last; more on request; 0: the last only while training
    probe_labels: str | None = None  # labelled images (CSV or folder-per-class) watched while training
    probe_every: int = 1  # epochs between probe evaluations
    keep: Literal["last", "best-probe"] = "last"  # which epoch becomes encoder.keras
    view_average: Literal["none", "dihedral"] | None = None  # the stored encoder's inference (encoder.py)
    seed: int = 0
    augment: AugmentConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = from_dict(AugmentConfig, self.augment, source="augment")

    @property
    def record(self) -> PreprocessingRecord:
        return PreprocessingRecord(self.image_size, self.crop_fraction, self.colour, self.record_version)


def preset_name(config: PretrainConfig) -> str:
    """The preset a config draws its defaults from: its own, else by weights."""
    return config.preset or ("scratch" if config.weights == "none" else "imagenet")


def resolve_config(config: PretrainConfig | None = None, config_file: str | Path | None = None,
                   augment: dict[str, Any] | None = None, **overrides: Any) -> PretrainConfig:
    """Preset values < config file < ``overrides`` (``None`` overrides are ignored); checks the result.

    The preset is ``config.preset`` if set, else ``scratch`` for ``weights == "none"``, else ``imagenet``.
    ``augment`` holds single augmentation settings applied on top of the resolved augmentation.
    """
    base = config or (load_config(PretrainConfig, config_file) if config_file else PretrainConfig())
    cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    preset = preset_name(cfg)
    values = PRESETS[preset]
    filled = {k: v for k, v in values.items() if k != "augment" and getattr(cfg, k) is None}
    if cfg.augment is None:
        filled["augment"] = AugmentConfig(**values["augment"])
    cfg = dataclasses.replace(cfg, preset=preset, **filled)
    given = {k: v for k, v in (augment or {}).items() if v is not None}
    if given:
        cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, **given))
    check_config(cfg)
    return cfg


def check_config(cfg: PretrainConfig) -> None:
    """One-line errors for settings no run could use (before anything is written)."""
    if not 2 <= cfg.views <= 16:
        raise InputError(f"--views {cfg.views}: must be between 2 and 16 augmented views per image")
    if cfg.batch_size < 2:
        raise InputError(f"--batch-size {cfg.batch_size}: need at least 2 images per batch")
    if cfg.epochs < 1:
        raise InputError(f"--epochs {cfg.epochs}: need at least 1")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise InputError(f"--lr {cfg.lr}: must be a positive number")
    if not 0.0 <= cfg.val_fraction <= 0.5:
        raise InputError(f"--val-fraction {cfg.val_fraction}: must be within [0, 0.5]")
    if not 0.0 <= cfg.dropout < 1.0:
        raise InputError(f"dropout {cfg.dropout}: must be within [0, 1)")
    if not 0.0 <= cfg.drop_path < 1.0:
        raise InputError(f"--drop-path {cfg.drop_path}: must be within [0, 1)")
    if not (cfg.margin >= 0 and math.isfinite(cfg.margin)):
        raise InputError(f"--margin {cfg.margin}: must be a finite number >= 0")
    if not (cfg.warmup_epochs >= 0 and math.isfinite(cfg.warmup_epochs)):
        raise InputError(f"--warmup-epochs {cfg.warmup_epochs}: must be a finite number >= 0")
    if not 0.0 <= cfg.cooldown <= 1.0:
        raise InputError(f"--cooldown {cfg.cooldown}: must be a share of the run within [0, 1]")
    if cfg.cooldown > 0 and cfg.lr_decay != "constant":
        raise InputError(f"--cooldown {cfg.cooldown:g} ends a constant learning rate; --lr-decay {cfg.lr_decay} "
                         "already decays it: use one or the other")
    if cfg.early_stopping < 0 or cfg.lr_plateau < 0:
        raise InputError(f"--early-stopping {cfg.early_stopping} / --lr-plateau {cfg.lr_plateau}: must be >= 0")
    if not 0.0 < cfg.plateau_factor <= 1.0 or cfg.keep_checkpoints < 0:
        raise InputError(f"plateau factor {cfg.plateau_factor} must be within (0, 1] and keep_checkpoints "
                         f"{cfg.keep_checkpoints} at least 0")
    if cfg.preset == "site" and cfg.weights in (None, "imagenet", "none"):
        instead = f" instead of --weights {cfg.weights}" if cfg.weights else ""
        raise InputError("--preset site continues a trained encoder on a new site's cells: give it with --weights "
                         f"RUN/encoder.keras{instead}")
    if cfg.weights not in ("imagenet", "none") and not Path(cfg.weights).is_file():
        raise InputError(f"--weights {cfg.weights}: no such file (expected {WEIGHTS_KINDS})")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise InputError(f"--weight-decay {cfg.weight_decay}: must be a number >= 0")
    if cfg.probe_every < 1:
        raise InputError(f"--probe-every {cfg.probe_every}: need at least 1")
    if cfg.keep == "best-probe" and not cfg.probe_labels:
        raise InputError("--keep best-probe needs --probe-labels (the probe decides which epoch is best)")
    check_view_average(cfg.view_average)
    check_temperature(cfg.temperature)
    parse_head(cfg.head)
    _ = cfg.record  # validates image size, crop fraction, colour mode and record version


def config_from_saved(data: dict[str, Any], source: str) -> PretrainConfig:
    """A saved run's config; settings it predates take the meaning they had then (:data:`LEGACY`)."""
    legacy = {k: v for k, v in LEGACY.items() if k not in data}
    return from_dict(PretrainConfig, {**data, **legacy}, source=source)


def load_run_config(run: str | Path) -> PretrainConfig:
    """The config a run folder saved (``RUN/config.json``), read with :func:`config_from_saved`."""
    path = Path(run) / "config.json"
    return config_from_saved(read_json_object(path, "the run's config"), str(path))
