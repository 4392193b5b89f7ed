"""Self-supervised triplet pretraining: two augmented views per image, semi-hard mining, resumable runs.

A run folder holds ``config.json`` (the resolved :class:`PretrainConfig`), ``history.csv``,
``checkpoints/`` (one ``.npz`` per completed epoch plus ``checkpoint.json`` naming the latest),
``skipped.csv`` (unreadable images), ``colour_reference.json`` (the Reinhard lαβ statistics of up to
500 training images: the source style a new site is normalised to), ``encoder.keras`` (the embedding
model only, float32, with its preprocessing record) and, optionally, ``tensorboard/``. Every epoch's
order and augmentation derive from ``(seed, epoch)`` and the checkpoint holds every variable (weights,
BN statistics, dropout seed states, optimizer slots, LR factor), so a run killed at any point and
resumed equals an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import (
    atomic_write_text,
    csv_text,
    from_dict,
    load_config,
    require_same_config,
    save_config,
    to_dict,
)
from ..data.augment import AugmentConfig
from ..data.colour import RUN_REFERENCE_FILE, ReinhardReference
from ..data.manifest import Manifest
from ..data.preprocess import PreprocessingRecord
from ..errors import InputError
from ..progress import ProgressFactory, stage

PRESETS: dict[str, dict[str, Any]] = {
    # The paper: ImageNet initialisation, BatchNorm frozen, Adam 1e-5 constant, 30 epochs, batch 100.
    "imagenet": {"weights": "imagenet", "lr": 1e-5, "lr_decay": "constant", "warmup_epochs": 0.0,
                 "freeze_bn": True, "epochs": 30, "batch_size": 100},
    # Random initialisation (--weights none): BatchNorm training, higher LR with warm-up and cosine decay,
    # more epochs; see benchmarks/RESULTS.md "Pretraining" for the measurements behind these values.
    "scratch": {"weights": "none", "lr": 1e-3, "lr_decay": "cosine", "warmup_epochs": 1.0,
                "freeze_bn": False, "epochs": 60, "batch_size": 100},
}
HISTORY_COLUMNS = ("epoch", "loss", "val_loss", "lr", "seconds", "images_per_s")
_RESUME_IGNORES = ("tensorboard", "keep_checkpoints")
REFERENCE_SAMPLE = 500


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. ``None`` fields are filled from the preset by :func:`resolve_config`."""

    preset: Literal["imagenet", "scratch"] | None = None
    weights: str | None = None  # imagenet | none | PATH (.keras encoder or .h5 backbone weights)
    epochs: int | None = None
    batch_size: int | None = None  # distinct images per batch (2x views)
    lr: float | None = None
    lr_decay: Literal["constant", "cosine"] | None = None
    warmup_epochs: float | None = None
    freeze_bn: bool | None = None
    image_size: int = 224
    crop_fraction: float = 0.875
    colour: Literal["grayworld", "none"] = "grayworld"
    loss: Literal["semihard", "hard"] = "semihard"
    margin: float = 0.5
    distance: Literal["L2", "squared-L2", "angular"] = "L2"
    dropout: float = 0.2
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
    keep_checkpoints: int = 2
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = from_dict(AugmentConfig, self.augment, source="augment")

    @property
    def record(self) -> PreprocessingRecord:
        return PreprocessingRecord(self.image_size, self.crop_fraction, self.colour)


def resolve_config(config: PretrainConfig | None = None, config_file: str | Path | None = None,
                   **overrides: Any) -> PretrainConfig:
    """Preset values < config file < ``overrides`` (``None`` overrides are ignored); checks the result.

    The preset is ``config.preset`` if set, else ``scratch`` for ``weights == "none"``, else ``imagenet``.
    """
    base = config or (load_config(PretrainConfig, config_file) if config_file else PretrainConfig())
    cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    preset = cfg.preset or ("scratch" if cfg.weights == "none" else "imagenet")
    filled = {k: v for k, v in PRESETS[preset].items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, preset=preset, **filled)
    _check(cfg)
    return cfg


def _check(cfg: PretrainConfig) -> None:
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
    if not (cfg.margin >= 0 and math.isfinite(cfg.margin)):
        raise InputError(f"--margin {cfg.margin}: must be a finite number >= 0")
    if not (cfg.warmup_epochs >= 0 and math.isfinite(cfg.warmup_epochs)):
        raise InputError(f"--warmup-epochs {cfg.warmup_epochs}: must be a finite number >= 0")
    if cfg.early_stopping < 0 or cfg.lr_plateau < 0:
        raise InputError(f"--early-stopping {cfg.early_stopping} / --lr-plateau {cfg.lr_plateau}: must be >= 0")
    if not 0.0 < cfg.plateau_factor <= 1.0 or cfg.keep_checkpoints < 1:
        raise InputError(f"plateau factor {cfg.plateau_factor} must be within (0, 1] and keep_checkpoints "
                         f"{cfg.keep_checkpoints} at least 1")
    if cfg.weights not in ("imagenet", "none") and not Path(cfg.weights).is_file():
        raise InputError(f"--weights {cfg.weights}: no such file (expected imagenet, none, a .keras encoder or "
                         ".h5 weights)")
    _ = cfg.record  # validates image size, crop fraction and colour mode


@dataclass
class PretrainResult:
    """What a run produced: the encoder's path and fingerprint, the history rows, skipped files."""

    out: Path
    encoder: Path
    fingerprint: str
    history: list[dict[str, float]]
    skipped: dict[str, str]
    stopped_early: bool = False


def pretrain(manifest: Manifest, out: str | Path, config: PretrainConfig, *, resume: bool = False,
             progress: ProgressFactory | None = None, log: Callable[[str], None] = print) -> PretrainResult:
    """Train the triplet encoder on ``manifest``'s images (labels unused) and write the run into ``out``."""
    from .distribute import is_chief, make_strategy, precision_policy

    out = Path(out)
    config = resolve_config(config)
    _check_resume(out, config, resume)
    strategy = make_strategy(config.strategy)  # first: multi-worker collectives must be set up before any TF op
    usable, skipped = _usable_images(manifest, config.strict)
    train_idx, val_idx = _split(len(usable), config)
    with precision_policy(config.precision):
        # the encoder is built (weights loaded) before anything is written: a failed start leaves no files
        trainer = _make_trainer(config, strategy, len(train_idx) // config.batch_size)
        if skipped:
            atomic_write_text(out / "skipped.csv", csv_text([["path", "reason"], *map(list, skipped.items())]))
        if not resume:
            save_config(config, out / "config.json")
        if is_chief() and not (out / RUN_REFERENCE_FILE).is_file():  # also added when resuming an older run
            _colour_reference([usable[i] for i in train_idx], config.seed).to_json(out / RUN_REFERENCE_FILE)
        log(f"{len(usable)} images: {len(train_idx)} for training, {len(val_idx)} held out for the validation "
            "loss" + (f"; {len(skipped)} unreadable skipped (listed in {out / 'skipped.csv'})" if skipped else ""))
        data = _Data(config, [usable[i] for i in train_idx], [usable[i] for i in val_idx], progress)
        loop = _Loop(config, trainer, out, write=is_chief())
        if resume:
            loop.restore()
        stopped = loop.run(data, progress, log)
    encoder_path = out / "encoder.keras"
    fp = _export_encoder(config, trainer.model, encoder_path) if is_chief() else ""
    log(f"encoder written to {encoder_path} (fingerprint {fp[:12]})")
    return PretrainResult(out, encoder_path, fp, loop.history, skipped, stopped)


def _colour_reference(paths: list[str], seed: int) -> ReinhardReference:
    """Reinhard statistics of the raw (not gray-world) training images, a seeded sample of at most 500."""
    from ..data.imageio import LazyImages

    return ReinhardReference.from_images(LazyImages(paths), sample=REFERENCE_SAMPLE, seed=seed)


def _check_resume(out: Path, config: PretrainConfig, resume: bool) -> None:
    """Refuse to resume without a run, with a different config, or to start over an existing run."""
    saved = out / "config.json"
    if resume:
        if not saved.is_file():
            raise InputError(f"{out}: nothing to resume (no config.json); start without --resume")
        require_same_config(load_config(PretrainConfig, saved), config, ignore=_RESUME_IGNORES, where=str(out))
    elif saved.exists():
        raise InputError(f"{out}: already holds a run (use --resume to continue it or --overwrite)")


def _usable_images(manifest: Manifest, strict: bool) -> tuple[list[str], dict[str, str]]:
    """Absolute paths of readable images and {unreadable path: reason} (refused if strict)."""
    from ..data.imageio import probe_many

    paths = manifest.absolute()
    infos = probe_many(paths)
    skipped = {info.path: info.error for info in infos if not info.ok}
    if skipped and strict:
        first = next(iter(skipped.items()))
        raise InputError(f"{first[0]}: {first[1]} ({len(skipped)} unreadable image(s); drop --strict to skip them)")
    return [p for p in paths if p not in skipped], skipped


def _split(n: int, config: PretrainConfig) -> tuple[list[int], list[int]]:
    from ..data.pipeline import holdout_split

    train_idx, val_idx = holdout_split(n, config.val_fraction, config.seed)
    if len(train_idx) < config.batch_size:
        raise InputError(f"only {len(train_idx)} training images (of {n}, {len(val_idx)} held out for validation): "
                         f"fewer than one batch of {config.batch_size}; lower --batch-size or --val-fraction")
    return train_idx, val_idx


def _make_trainer(config: PretrainConfig, strategy: Any, steps_per_epoch: int):
    import keras

    from .encoder import build_encoder
    from .training import TripletTrainer

    views = 2 * config.batch_size
    if views % strategy.num_replicas_in_sync:
        raise InputError(f"--batch-size {config.batch_size}: {views} views do not split evenly over "
                         f"{strategy.num_replicas_in_sync} replicas")
    keras.utils.set_random_seed(config.seed)

    def model_fn() -> keras.Model:
        model = build_encoder(config.record, config.weights, config.dropout, config.freeze_bn)
        if strategy.num_replicas_in_sync > 1 and not config.freeze_bn:
            _synchronise_batchnorm(model, True)  # global-batch statistics: results independent of replicas
        return model

    return TripletTrainer(model_fn, strategy, lr=config.lr, warmup_steps=round(config.warmup_epochs * steps_per_epoch),
                          total_steps=config.epochs * steps_per_epoch, decay=config.lr_decay, loss=config.loss,
                          margin=config.margin, distance=config.distance, precision=config.precision,
                          jit=config.jit, eager=config.eager)


def _synchronise_batchnorm(model: Any, on: bool) -> None:
    import keras

    from .encoder import all_layers

    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = on


class _Data:
    """Per-epoch training datasets and the fixed validation dataset."""

    def __init__(self, config: PretrainConfig, train: list[str], val: list[str], progress: Any) -> None:
        from ..data.pipeline import cache_training_images

        self.config, self.train, self.val, self.cache = config, train, val, None
        if config.cache:
            with stage(progress, len(train), "caching") as advance:
                self.cache, kept = cache_training_images(train, config.record, progress=advance)
            self.train = [train[i] for i in kept]
        self.val_batch = min(config.batch_size, len(val))

    def epoch(self, epoch: int) -> Any:
        from ..data.pipeline import two_view_dataset

        c = self.config
        return two_view_dataset(self.train, range(len(self.train)), c.record, c.augment, c.batch_size, c.seed,
                                epoch, cache=self.cache)

    def validation(self) -> Any | None:
        from ..data.pipeline import two_view_dataset

        if self.val_batch < 2:
            return None
        c = self.config
        return two_view_dataset(self.val, range(len(self.val)), c.record, c.augment, self.val_batch, c.seed,
                                -1, shuffle=False)


class _Loop:
    """The epoch loop with history, early stopping, LR-on-plateau, checkpoints and TensorBoard."""

    def __init__(self, config: PretrainConfig, trainer: Any, out: Path, write: bool) -> None:
        self.config, self.trainer, self.out, self.write = config, trainer, out, write
        self.history: list[dict[str, float]] = []
        self.watch = {"best": math.inf, "since_best": 0, "since_plateau": 0}
        self.ckpt_dir = out / "checkpoints"

    def restore(self) -> None:
        import json

        from .training import load_checkpoint

        pointer = self.ckpt_dir / "checkpoint.json"
        if not pointer.is_file():
            return  # killed before the first epoch ended: start again from the (seeded) beginning
        name = json.loads(pointer.read_text())["file"]
        arrays, meta = load_checkpoint(self.ckpt_dir / name)
        require_same_config(from_dict(PretrainConfig, meta["config"]), self.config, ignore=_RESUME_IGNORES,
                            where=str(self.ckpt_dir / name))
        self.trainer.restore(arrays, str(self.ckpt_dir / name))
        self.history, self.watch = meta["history"], meta["watch"]

    def run(self, data: _Data, progress: ProgressFactory | None, log: Callable[[str], None]) -> bool:
        c, trainer = self.config, self.trainer
        val_ds = data.validation()
        writer = self._tensorboard()
        for epoch in range(len(self.history) + 1, c.epochs + 1):
            if self.watch["since_best"] >= c.early_stopping > 0:
                break
            start, lr = time.perf_counter(), trainer.learning_rate
            steps = len(data.train) // c.batch_size
            with stage(progress, steps, f"epoch {epoch}/{c.epochs}") as advance:
                loss, steps = trainer.run_epoch(data.epoch(epoch), train=True, progress=advance)
            val_loss = trainer.run_epoch(val_ds, train=False)[0] if val_ds is not None else math.nan
            seconds = time.perf_counter() - start
            row = {"epoch": epoch, "loss": loss, "val_loss": val_loss, "lr": lr, "seconds": round(seconds, 2),
                   "images_per_s": round(steps * c.batch_size / seconds, 2)}
            self.history.append(row)
            self._watch(val_loss)
            log(f"epoch {epoch}/{c.epochs}: loss {loss:.4f}, val_loss {val_loss:.4f}, lr {lr:.3g}, "
                f"{seconds:.0f} s")
            if writer is not None:
                _write_scalars(writer, row)
            if self.write:
                self._save(epoch)
        return self.watch["since_best"] >= c.early_stopping > 0

    def _watch(self, val_loss: float) -> None:
        """Update early-stopping and plateau counters; lower the LR factor on a plateau."""
        c, w = self.config, self.watch
        if math.isnan(val_loss):
            return
        if val_loss < w["best"]:
            w.update(best=val_loss, since_best=0, since_plateau=0)
            return
        w["since_best"] += 1
        w["since_plateau"] += 1
        if w["since_plateau"] >= c.lr_plateau > 0:
            self.trainer.lr_factor.assign(float(self.trainer.lr_factor.numpy()) * c.plateau_factor)
            w["since_plateau"] = 0

    def _save(self, epoch: int) -> None:
        from .training import save_checkpoint

        name = f"epoch-{epoch:04d}.npz"
        meta = {"epoch": epoch, "config": to_dict(self.config), "history": self.history, "watch": self.watch}
        save_checkpoint(self.ckpt_dir / name, self.trainer.state(), meta)
        rows = [list(HISTORY_COLUMNS)] + [[str(r[k]) for k in HISTORY_COLUMNS] for r in self.history]
        atomic_write_text(self.out / "history.csv", csv_text(rows))
        atomic_write_text(self.ckpt_dir / "checkpoint.json", f'{{"epoch": {epoch}, "file": "{name}"}}\n')
        for old in sorted(self.ckpt_dir.glob("epoch-*.npz"))[:-max(self.config.keep_checkpoints, 1)]:
            old.unlink()

    def _tensorboard(self) -> Any:
        if not (self.config.tensorboard and self.write):
            return None
        import tensorflow as tf

        return tf.summary.create_file_writer(str(self.out / "tensorboard"))


def _write_scalars(writer: Any, row: dict[str, float]) -> None:
    import tensorflow as tf

    with writer.as_default():
        for key in ("loss", "val_loss", "lr", "images_per_s"):
            tf.summary.scalar(key, row[key], step=int(row["epoch"]))
    writer.flush()



def _export_encoder(config: PretrainConfig, model: Any, path: Path) -> str:
    """Save a float32 copy of the trained encoder (no mixed-precision or synchronised-BN settings)."""
    from .encoder import build_encoder, save_encoder

    clean = build_encoder(config.record, "none", config.dropout, config.freeze_bn)
    clean.set_weights(model.get_weights())
    return save_encoder(clean, path)
