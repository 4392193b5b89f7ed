"""Self-supervised pretraining: two (or more) augmented views per image, a triplet or NT-Xent loss, resumable runs.

A run folder holds ``config.json`` (the resolved :class:`PretrainConfig`), ``history.csv`` (losses, and the
probe's scores when the run has one: :mod:`.probe`), ``checkpoints/`` (the last completed epoch's ``.npz``
plus ``checkpoint.json`` naming it; ``best-probe.npz`` with ``--keep best-probe``; with ``--keep-checkpoints
0`` a finished run drops them and ``checkpoint.json`` says so),
``skipped.csv`` (unreadable images), ``colour_reference.json`` (the Reinhard lαβ statistics of up to
500 training images: the source style a new site is normalised to), ``encoder.keras`` (the embedding
model only — never the projection head —, float32, with its preprocessing record: the last epoch's, or the
best probe epoch's with ``--keep best-probe``) and, optionally, ``tensorboard/``. Every epoch's
order and augmentation derive from ``(seed, epoch)`` and the checkpoint holds every variable (weights,
BN statistics, dropout seed states, optimizer slots, LR factor), so a run killed at any point and
resumed equals an uninterrupted one.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import atomic_write_text, csv_text, require_same_config, save_config, to_dict
from ..data.colour import RUN_REFERENCE_FILE, ReinhardReference
from ..data.manifest import Manifest
from ..errors import InputError
from ..progress import ProgressFactory, stage
from .checkpoints import checkpoint_pointer, export_checkpoint, export_encoder, last_checkpoint
from .pretrain_config import (
    PretrainConfig,
    check_schedule_continues,
    config_from_saved,
    cooldown_start,
    load_run_config,
    resolve_config,
    resume_ignores,
)
from .probe import PROBE_COLUMNS

__all__ = ["PretrainConfig", "PretrainResult", "export_checkpoint", "make_trainer", "pretrain", "resolve_config"]
HISTORY_COLUMNS = ("epoch", "loss", "val_loss", "lr", "seconds", "images_per_s", *PROBE_COLUMNS)
REFERENCE_SAMPLE = 500
BEST_PROBE = "best-probe.npz"


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
    """Train the encoder on ``manifest``'s images (labels unused) and write the run into ``out``.

    With ``config.probe_labels`` a labelled probe set (paths relative to the manifest's root, or a
    folder-per-class tree) is embedded every ``probe_every`` epochs and scored (:mod:`.probe`).
    """
    from .distribute import is_chief, make_strategy, precision_policy

    out = Path(out)
    config = resolve_config(config)
    _check_resume(out, config, resume)
    strategy = make_strategy(config.strategy)  # first: multi-worker collectives must be set up before any TF op
    probe_set = _probe_manifest(config, manifest)
    usable, skipped = _usable_images(manifest, config.strict)
    train_idx, val_idx = _split(len(usable), config)
    chief = is_chief()
    with precision_policy(config.precision):
        # the encoder is built (weights loaded) before anything is written: a failed start leaves no files
        trainer = make_trainer(config, strategy, len(train_idx) // config.batch_size)
        if chief:
            if not resume:
                save_config(config, out / "config.json")
            if skipped:
                atomic_write_text(out / "skipped.csv", csv_text([["path", "reason"], *map(list, skipped.items())]))
            if not (out / RUN_REFERENCE_FILE).is_file():  # also added when resuming an older run
                _colour_reference([usable[i] for i in train_idx], config.seed).to_json(out / RUN_REFERENCE_FILE)
        log(f"{len(usable)} images: {len(train_idx)} for training, {len(val_idx)} held out for the validation "
            "loss" + (f"; {len(skipped)} unreadable skipped (listed in {out / 'skipped.csv'})" if skipped else ""))
        data = TrainingData(config, [usable[i] for i in train_idx], [usable[i] for i in val_idx], progress)
        probe = _make_probe(config, probe_set, data.val)
        loop = EpochLoop(config, trainer, out, write=chief, probe=probe)
        if resume:
            loop.restore()
            if chief and load_run_config(out).epochs != config.epochs:  # a constant-LR run trained longer
                save_config(config, out / "config.json")
        stopped = loop.run(data, progress, log)
    encoder_path = out / "encoder.keras"
    fp = ""
    if chief:
        epoch = loop.restore_best_probe() if config.keep == "best-probe" else None
        fp = export_encoder(config, trainer.model, encoder_path)
        if epoch is not None:
            log(f"encoder from epoch {epoch}, the best probe score (--keep best-probe)")
        if config.keep_checkpoints == 0:  # after the export: killed in between, a resume exports again
            loop.drop_checkpoints()
            log("checkpoints dropped (--keep-checkpoints 0): the run is final and cannot be trained longer")
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
        if checkpoint_pointer(out / "checkpoints").get("file", "") is None:
            raise InputError(f"{out}: the run finished and dropped its checkpoints (--keep-checkpoints 0), so it "
                             "cannot be resumed or trained longer; its encoder.keras is final")
        require_same_config(load_run_config(out), config, ignore=resume_ignores(config), where=str(out))
    elif saved.exists():
        raise InputError(f"{out}: already holds a run (use --resume to continue it or --overwrite)")


def _probe_manifest(config: PretrainConfig, manifest: Manifest) -> Manifest | None:
    """The probe's labelled images: a CSV (paths relative to the training images' root) or a folder."""
    from ..data.manifest import load_manifest

    if not config.probe_labels:
        return None
    source = Path(config.probe_labels)
    probe = load_manifest(source, None if source.is_dir() else manifest.root, manifest.allow_outside_root)
    if probe.labels is None:
        raise InputError(f"{source}: the probe set needs a 'label' column (or class-per-folder images)")
    return probe


def _make_probe(config: PretrainConfig, probe_set: Manifest | None, val_paths: list[str]) -> Any:
    """The probe for this run: labelled when a probe set is given, else the spread of validation images."""
    from .probe import MAX_UNLABELLED, TrainingProbe

    if probe_set is not None:
        return TrainingProbe.from_paths(probe_set.absolute(), probe_set.labels, config.record, config.seed)
    if not val_paths:
        return None
    return TrainingProbe.from_paths(val_paths[:MAX_UNLABELLED], None, config.record, config.seed)


def _usable_images(manifest: Manifest, strict: bool) -> tuple[list[str], dict[str, str]]:
    """Absolute paths of readable images and the unreadable ones with reasons (refused if strict)."""
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


def make_trainer(config: PretrainConfig, strategy: Any, steps_per_epoch: int) -> Any:
    """The :class:`~.training.EmbeddingTrainer` for ``config`` (encoder, head, loss, optimizer, schedule)."""
    import keras

    from .encoder import EMBEDDING_DIM, all_layers, build_encoder
    from .heads import build_head
    from .training import EmbeddingTrainer

    views = config.views * config.batch_size
    if views % strategy.num_replicas_in_sync:
        raise InputError(f"--batch-size {config.batch_size}: {views} views do not split evenly over "
                         f"{strategy.num_replicas_in_sync} replicas")
    keras.utils.set_random_seed(config.seed)

    def synchronise(layers: Any) -> None:
        """Global-batch BatchNorm statistics under several replicas: results independent of their number."""
        if strategy.num_replicas_in_sync > 1:
            for layer in layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True

    def model_fn() -> keras.Model:
        model = build_encoder(config.record, config.weights, config.dropout, config.freeze_bn,
                              drop_path=config.drop_path)
        if not config.freeze_bn:
            synchronise(all_layers(model))
        return model

    def head_fn() -> Any:
        head = build_head(config.head, EMBEDDING_DIM)
        if head is not None:
            synchronise(head.hidden)
        return head

    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    total_steps = config.epochs * steps_per_epoch
    cooldown_steps = total_steps - round(cooldown_start(config) * steps_per_epoch)  # starts on an epoch's step
    return EmbeddingTrainer(model_fn, strategy, lr=config.lr, warmup_steps=warmup_steps, total_steps=total_steps,
                            cooldown_steps=cooldown_steps, decay=config.lr_decay, loss=config.loss,
                            margin=config.margin, distance=config.distance, temperature=config.temperature,
                            head_fn=head_fn, weight_decay=config.weight_decay,
                            precision=config.precision, jit=config.jit, eager=config.eager)


class TrainingData:
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
        from ..data.pipeline import multi_view_dataset

        c = self.config
        return multi_view_dataset(self.train, range(len(self.train)), c.record, c.augment, c.batch_size, c.seed,
                                  epoch, views=c.views, cache=self.cache)

    def validation(self) -> Any | None:
        from ..data.pipeline import multi_view_dataset

        if self.val_batch < 2:
            return None
        c = self.config
        return multi_view_dataset(self.val, range(len(self.val)), c.record, c.augment, self.val_batch, c.seed,
                                  -1, views=c.views, shuffle=False)


class EpochLoop:
    """The epoch loop: history, probe, early stopping, LR-on-plateau, checkpoints and TensorBoard."""

    def __init__(self, config: PretrainConfig, trainer: Any, out: Path, write: bool, probe: Any = None) -> None:
        self.config, self.trainer, self.out, self.write, self.probe = config, trainer, out, write, probe
        self.history: list[dict[str, float]] = []
        self.watch = {"best": math.inf, "since_best": 0, "since_plateau": 0, "best_probe": -math.inf,
                      "best_probe_epoch": 0}
        self.ckpt_dir = out / "checkpoints"

    def restore(self) -> None:
        from .training import load_checkpoint

        name = last_checkpoint(self.ckpt_dir)
        if name is None:
            return  # killed before the first epoch ended: start again from the (seeded) beginning
        arrays, meta = load_checkpoint(self.ckpt_dir / name)
        where = str(self.ckpt_dir / name)
        saved = config_from_saved(meta["config"], where)
        require_same_config(saved, self.config, ignore=resume_ignores(self.config), where=where)
        if len(meta["history"]) > self.config.epochs:
            raise InputError(f"{where}: the run has already trained {len(meta['history'])} epochs; "
                             f"--epochs {self.config.epochs} cannot undo them")
        check_schedule_continues(saved, self.config, len(meta["history"]), where)
        self.trainer.restore(arrays, where)
        self.history = meta["history"]
        self.watch.update(meta["watch"])

    def run(self, data: TrainingData, progress: ProgressFactory | None, log: Callable[[str], None]) -> bool:
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
            row.update(self._probe(epoch))
            self.history.append(row)
            self._watch(val_loss)
            log(f"epoch {epoch}/{c.epochs}: loss {loss:.4f}, val_loss {val_loss:.4f}, lr {lr:.3g}, "
                f"{seconds:.0f} s{_probe_text(row)}")
            if writer is not None:
                _write_scalars(writer, row)
            if self.write:
                self._save(epoch)
        return self.watch["since_best"] >= c.early_stopping > 0

    def _probe(self, epoch: int) -> dict[str, float]:
        """The probe's scores at this epoch (every ``probe_every`` epochs and at the last), else NaN."""
        c = self.config
        if self.probe is None or (epoch % c.probe_every and epoch != c.epochs):
            return dict.fromkeys(PROBE_COLUMNS, math.nan)
        from .encoder import with_view_average

        scores = self.probe(with_view_average(self.trainer.model, c.view_average))  # what encoder.keras embeds
        return {k: round(v, 4) for k, v in scores.items()}

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
        state = self.trainer.state()
        score = self.history[-1].get("probe_linear_f1", math.nan)
        if self.config.keep == "best-probe" and score > self.watch["best_probe"]:  # NaN never wins
            self.watch.update(best_probe=score, best_probe_epoch=epoch)
            save_checkpoint(self.ckpt_dir / BEST_PROBE, state, {"epoch": epoch, "probe_linear_f1": score})
        meta = {"epoch": epoch, "config": to_dict(self.config), "history": self.history, "watch": self.watch}
        save_checkpoint(self.ckpt_dir / name, state, meta)
        rows = [list(HISTORY_COLUMNS)] + [[_cell(r.get(k)) for k in HISTORY_COLUMNS] for r in self.history]
        atomic_write_text(self.out / "history.csv", csv_text(rows))
        atomic_write_text(self.ckpt_dir / "checkpoint.json", f'{{"epoch": {epoch}, "file": "{name}"}}\n')
        for old in sorted(self.ckpt_dir.glob("epoch-*.npz"))[:-max(self.config.keep_checkpoints, 1)]:
            old.unlink()

    def drop_checkpoints(self) -> None:
        """A finished run with ``keep_checkpoints`` 0: the pointer says so first, then the files go."""
        atomic_write_text(self.ckpt_dir / "checkpoint.json", f'{{"epoch": {len(self.history)}, "file": null}}\n')
        for path in [*self.ckpt_dir.glob("epoch-*.npz"), self.ckpt_dir / BEST_PROBE]:
            path.unlink(missing_ok=True)

    def restore_best_probe(self) -> int | None:
        """Load the best probe epoch's weights into the trainer; its epoch, or None if there is none."""
        from .training import load_checkpoint

        path = self.ckpt_dir / BEST_PROBE
        if not path.is_file():
            return None
        arrays, meta = load_checkpoint(path)
        self.trainer.restore(arrays, str(path))
        return int(meta["epoch"])

    def _tensorboard(self) -> Any:
        if not (self.config.tensorboard and self.write):
            return None
        import tensorflow as tf

        return tf.summary.create_file_writer(str(self.out / "tensorboard"))


def _cell(value: Any) -> str:
    """A history cell: empty for a value the run did not measure (NaN probe scores, older rows)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _probe_text(row: dict[str, float]) -> str:
    parts = [f"{label} {row[key]:.3f}" for key, label in
             (("probe_knn_f1", "probe k-NN F1"), ("probe_linear_f1", "linear F1"), ("embedding_std", "spread"))
             if not math.isnan(row.get(key, math.nan))]
    return ("; " + ", ".join(parts)) if parts else ""


def _write_scalars(writer: Any, row: dict[str, float]) -> None:
    import tensorflow as tf

    with writer.as_default():
        for key in ("loss", "val_loss", "lr", "images_per_s", *PROBE_COLUMNS):
            if not math.isnan(row.get(key, math.nan)):
                tf.summary.scalar(key, row[key], step=int(row["epoch"]))
    writer.flush()
