"""Embedding images into a store: hash, skip what is stored, stream the rest through the encoder.

Files are probed (sha256 of the bytes, header) first; content already in the store is never embedded
again (a known image under a new path is recorded with the stored vector). The rest streams through
:func:`hemoembed.data.pipeline.inference_dataset` (parallel decode, batched inference, prefetch) and is
committed every ``part_size`` images as an immutable part, so a killed run loses at most one part's
work and a rerun completes the store without duplicates.

:func:`embed_to_store` is the whole command: every option is checked before the folder is touched, the
folder is locked before anything in it changes (``overwrite`` never removes a store another process is
writing to), a run that fails before its first part leaves no store bound to the encoder, and
``embed_config.json`` is written when a run succeeds (a failed run never replaces the last good one).

Several writers fill one store with ``shard=(I, N)``: each takes the manifest rows whose path hashes to
shard I of N (deterministic and disjoint, whatever order each machine lists the files in), holds only its
shard's lock, and commits its own parts (part names are claimed atomically, so concurrent writers never
collide); its rejects and config go to ``rejects-shard-I-of-N.csv`` and ``embed_config-shard-I-of-N.json``.
The union of the shards' rows is one run's rows, and a killed shard re-run embeds only its missing images.
"""
from __future__ import annotations

import shutil
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import atomic_write_text, csv_text, save_config
from ..data.imageio import ImageInfo, probe_many
from ..data.manifest import Manifest, ensure_apart
from ..data.preprocess import PreprocessingRecord
from ..errors import InputError
from ..progress import ProgressFactory, no_progress
from .lock import is_lock_file, writer_lock
from .store import BASE_COLUMNS, STORE_FILE, EmbeddingStore, make_part_table

REJECTS_FILE = "rejects.csv"
CONFIG_FILE = "embed_config.json"
UNDECODABLE = "cannot decode image (corrupt or truncated)"
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class EmbedConfig:
    """Settings of one ``hemoembed embed`` run, saved as ``embed_config.json`` in the store."""

    encoder: str = ""
    images: str = ""
    image_root: str = ""
    batch_size: int = 64
    part_size: int = 2048
    strict: bool = False
    metadata_columns: list[str] = field(default_factory=list)
    shard: str = ""  # "I/N" when this run embedded one shard of the images
    strategy: str = "one"
    dtype: str = "float32"


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1-based) → ``(I, N)``; a one-line error otherwise."""
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r} is not I/N (e.g. 1/2)") from None
    if not 1 <= index <= count:
        raise InputError(f"--shard {text!r}: I must be between 1 and N")
    return index, count


def shard_rows(paths: Sequence[str], shard: tuple[int, int]) -> list[int]:
    """Rows of ``paths`` in shard ``(I, N)``: by a hash of the path, so every machine agrees whatever order
    it lists the images in, and every path is in exactly one shard."""
    import hashlib

    index, count = shard
    return [i for i, path in enumerate(paths)
            if int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % count == index - 1]


def shard_file(name: str, shard: tuple[int, int] | None) -> str:
    """``rejects.csv`` → ``rejects-shard-I-of-N.csv`` for a shard's own copy of a run file."""
    if shard is None:
        return name
    stem, dot, ext = name.partition(".")
    return f"{stem}-shard-{shard[0]}-of-{shard[1]}{dot}{ext}"


@dataclass
class EmbedResult:
    """What one run did: counts, parts written and rejected files with reasons."""

    embedded: int = 0
    present: int = 0
    reused: int = 0
    rejects: list[tuple[str, str]] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    replicas: int = 1  # devices the images were embedded on (--strategy mirrored)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def summary(self) -> str:
        reused = f" ({self.reused} of them new paths of stored images)" if self.reused else ""
        present = self.present + self.reused
        devices = f" on {self.replicas} devices" if self.replicas > 1 else ""
        return f"{self.embedded} embedded{devices}, {present} already present{reused}, {self.rejected} rejected"


def make_forward(model) -> Callable:
    """A compiled inference call of ``model`` (training=False), cached per model so it is traced once."""
    import tensorflow as tf

    forward = _FORWARDS.get(model)
    if forward is None:
        owner = weakref.ref(model)  # a strong reference here would keep every model alive in the cache

        @tf.function(reduce_retracing=True)
        def forward(images):
            return owner()(images, training=False)

        _FORWARDS[model] = forward
    return forward


def iter_embeddings(model, record: PreprocessingRecord, paths: Sequence[str], batch_size: int = 64,
                    forward: Callable | None = None,
                    strategy: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(embeddings (B, D) float32, indices into paths (B,))``; undecodable files are skipped.

    With a ``tf.distribute`` ``strategy`` (e.g. mirrored over every local GPU) each batch is split across
    its replicas and gathered back in order."""
    from ..data.pipeline import inference_dataset

    if not paths:
        return
    dataset = inference_dataset(list(paths), record, batch_size)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        yield from _distributed_embeddings(model, dataset, strategy)
        return
    forward = forward or make_forward(model)
    for images, indices in dataset:
        yield np.asarray(forward(images), dtype=np.float32), indices.numpy()


def _distributed_embeddings(model, dataset, strategy) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import tensorflow as tf

    with strategy.scope():  # a replica of the frozen encoder on every device
        import keras

        replica = keras.models.clone_model(model)
        replica.set_weights(model.get_weights())

    @tf.function(reduce_retracing=True)
    def step(images, indices):
        per_replica = strategy.run(lambda x, i: (replica(x, training=False), i), (images, indices))
        return strategy.gather(per_replica[0], axis=0), strategy.gather(per_replica[1], axis=0)

    for images, indices in strategy.experimental_distribute_dataset(dataset):
        emb, idx = step(images, indices)
        yield np.asarray(emb, dtype=np.float32), np.asarray(idx)


def embed_images(model, record: PreprocessingRecord, paths: Sequence[str], batch_size: int = 64,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed image files: (embeddings (M, D) float32, ok_indices (M,) int64 into ``paths``, ascending).

    Files are probed first (the rule ``embed`` and ``check`` apply: readable, at most ``MAX_PIXELS``, no
    side below ``MIN_SIDE``); unusable or undecodable files are left out: compare ``ok_indices`` with
    ``range(len(paths))`` and :func:`~hemoembed.data.imageio.probe` a missing one for the reason.
    """
    if batch_size < 1:
        raise InputError(f"batch size {batch_size} must be at least 1")
    dim = int(model.output_shape[-1])
    usable = np.asarray([i for i, info in enumerate(probe_many(list(paths))) if info.ok], np.int64)
    vectors, indices = [np.zeros((0, dim), np.float32)], [np.zeros(0, np.int64)]
    for emb, idx in iter_embeddings(model, record, [paths[i] for i in usable], batch_size):
        vectors.append(emb)
        indices.append(usable[idx])
        if progress is not None:
            progress(len(idx))
    skipped = len(paths) - len(usable)
    if progress is not None and skipped:
        progress(skipped)
    return np.concatenate(vectors), np.concatenate(indices).astype(np.int64)


@dataclass
class EmbedPlan:
    """Per manifest row: stored already, reusable from the store, to embed, or rejected."""

    infos: list[ImageInfo]
    present: int = 0
    reuse: list[tuple[int, int]] = field(default_factory=list)  # (manifest row, store row)
    to_embed: dict[str, list[int]] = field(default_factory=dict)  # sha256 → manifest rows (first is embedded)
    rejects: list[tuple[str, str]] = field(default_factory=list)


def plan_embed(store: EmbeddingStore, manifest: Manifest, infos: Sequence[ImageInfo]) -> EmbedPlan:
    """Decide what each probed file needs, from the store's paths and sha256 values."""
    stored_path = dict(zip(store.paths, store.sha256))
    stored_sha = {sha: row for row, sha in enumerate(store.sha256)}
    plan = EmbedPlan(list(infos))
    seen_paths: set[str] = set()
    for i, (rel, info) in enumerate(zip(manifest.paths, infos)):
        if not info.ok:
            plan.rejects.append((rel, info.error))
        elif rel in seen_paths:
            plan.rejects.append((rel, "listed twice in the manifest (first occurrence kept)"))
        elif stored_path.get(rel) == info.sha256:
            plan.present += 1
        elif info.sha256 in stored_sha:
            plan.reuse.append((i, stored_sha[info.sha256]))
        else:
            plan.to_embed.setdefault(info.sha256, []).append(i)
        seen_paths.add(rel)
    return plan


def default_metadata_columns(manifest: Manifest) -> list[str]:
    """Manifest columns stored by default: all but ``label`` (labels are joined at task time, never stored)."""
    return [c for c in manifest.columns if c != "label"]


class _PartWriter:
    """Buffers rows and commits a part whenever ``part_size`` rows are waiting."""

    def __init__(self, store: EmbeddingStore, manifest: Manifest, infos: Sequence[ImageInfo],
                 metadata: Sequence[str], part_size: int) -> None:
        self.store, self.manifest, self.infos = store, manifest, infos
        self.metadata, self.part_size = list(metadata), part_size
        self.rows: list[int] = []
        self.vectors: list[np.ndarray] = []
        self.written: list[str] = []

    def add(self, rows: Sequence[int], vectors: np.ndarray) -> None:
        self.rows.extend(rows)
        self.vectors.append(np.asarray(vectors, np.float32))
        if len(self.rows) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        rows, m, infos = self.rows, self.manifest, self.infos
        table = make_part_table([m.paths[i] for i in rows], [infos[i].sha256 for i in rows],
                                [infos[i].width for i in rows], [infos[i].height for i in rows],
                                np.concatenate(self.vectors),
                                {c: [m.columns[c][i] for i in rows] for c in self.metadata},
                                dtype=self.store.dtype)
        self.written.append(self.store.append(table).name)
        self.rows, self.vectors = [], []


def embed_to_store(model, manifest: Manifest, directory: str | Path, *, overwrite: bool = False,
                   batch_size: int = 64, part_size: int = 2048, strict: bool = False,
                   metadata: Sequence[str] | None = None, config: EmbedConfig | None = None,
                   progress: ProgressFactory | None = None, shard: tuple[int, int] | None = None,
                   dtype: str | None = None, strategy: Any = None) -> tuple[EmbeddingStore, EmbedResult]:
    """Embed ``manifest`` with ``model`` into the store at ``directory``: created, appended to (same encoder
    only) or, with ``overwrite``, rebuilt; ``shard=(I, N)``: only shard I of N, beside the other shards'
    writers; ``dtype``: float16 or float32 storage of a new store; ``strategy``: a ``tf.distribute``
    strategy for inference. See the module docstring for what is guaranteed."""
    from ..model.encoder import fingerprint, preprocessing_record

    manifest, metadata = check_embed_target(manifest, directory, overwrite=overwrite, batch_size=batch_size,
                                            part_size=part_size, metadata=metadata, shard=shard, dtype=dtype)
    record, fp, dim = preprocessing_record(model), fingerprint(model), int(model.output_shape[-1])
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with writer_lock(directory, shard):
            if overwrite:
                clear_store_folder(directory)
            new = not (directory / STORE_FILE).is_file()
            store = EmbeddingStore.open_or_create(directory, fp, record, dim, dtype)
            try:
                result = _run_embed(model, record, store, manifest, batch_size, part_size, strict, metadata,
                                    config, progress, shard, strategy)
            except BaseException:
                if new and not store.part_files() and shard is None:  # other shards may be starting
                    clear_store_folder(directory)  # nothing embedded: leave no empty store bound to this encoder
                raise
    except BaseException:
        if created and directory.is_dir() and not (directory / STORE_FILE).exists():
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return store, result


def check_embed_target(manifest: Manifest, directory: str | Path, *, overwrite: bool = False, batch_size: int = 64,
                       part_size: int = 2048, metadata: Sequence[str] | None = None,
                       shard: tuple[int, int] | None = None, dtype: str | None = None) -> tuple[Manifest, list[str]]:
    """Everything :func:`embed_to_store` refuses without the model: sizes, metadata columns, a shard with
    ``overwrite``, a store folder that is the input or not a store, and an existing store's format or storage
    type. Returns this writer's share of the images and the metadata columns. Run before an encoder loads, so
    a wrong option is an error at once instead of after TensorFlow's start-up."""
    metadata = _checked_options(manifest, batch_size, part_size, metadata)
    if shard is not None:
        if overwrite:
            raise InputError("--overwrite with --shard would delete the other shards' work: rebuild the store "
                             "without --shard, or clear it first")
        manifest = manifest.subset(shard_rows(manifest.paths, shard))
    directory = Path(directory)
    ensure_apart(directory, manifest, "--store")
    _refuse_foreign_folder(directory, overwrite)
    if not overwrite and (directory / STORE_FILE).is_file():
        EmbeddingStore.open(directory).check_dtype(dtype)  # a damaged or future-format store is refused here
    return manifest, metadata


def clear_store_folder(directory: Path) -> None:
    """Remove everything in a store folder but its lock files (call with the writer lock held)."""
    for entry in directory.iterdir():
        if is_lock_file(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _refuse_foreign_folder(directory: Path, overwrite: bool) -> None:
    """A store goes into a new folder, an empty one or a store; anything else only with ``overwrite``."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: exists and is not a folder")
    if overwrite or not directory.is_dir():
        return
    visible = [p.name for p in directory.iterdir() if not p.name.startswith(".")]
    if visible and not (directory / STORE_FILE).is_file():
        raise InputError(f"{directory}: folder is not empty and is not an embedding store "
                         "(use --overwrite to replace it)")


def _checked_options(manifest: Manifest, batch_size: int, part_size: int,
                     metadata: Sequence[str] | None) -> list[str]:
    """The metadata columns to store, after refusing bad sizes and unknown or reserved columns."""
    if batch_size < 1 or part_size < 1:
        raise InputError(f"batch size ({batch_size}) and part size ({part_size}) must be at least 1")
    metadata = default_metadata_columns(manifest) if metadata is None else list(metadata)
    for name in metadata:
        manifest.column(name)  # clear error for an unknown column
        if name in BASE_COLUMNS:
            raise InputError(f"metadata column {name!r} clashes with a store column ({', '.join(BASE_COLUMNS)})")
    return metadata


def run_embed(model, record: PreprocessingRecord, store: EmbeddingStore, manifest: Manifest, *,
              batch_size: int = 64, part_size: int = 2048, strict: bool = False,
              metadata: Sequence[str] | None = None, config: EmbedConfig | None = None,
              progress: ProgressFactory | None = None) -> EmbedResult:
    """Embed ``manifest`` into ``store`` (already checked against the encoder); see the module docstring.

    One writer at a time: a second ``embed`` into the same store is refused while this one runs."""
    metadata = _checked_options(manifest, batch_size, part_size, metadata)
    with writer_lock(store.directory):
        return _run_embed(model, record, store, manifest, batch_size, part_size, strict, metadata, config, progress)


def _run_embed(model, record: PreprocessingRecord, store: EmbeddingStore, manifest: Manifest, batch_size: int,
               part_size: int, strict: bool, metadata: list[str], config: EmbedConfig | None,
               progress: ProgressFactory | None, shard: tuple[int, int] | None = None,
               strategy: Any = None) -> EmbedResult:
    progress = progress or no_progress
    store.remove_stale_temporaries()

    with progress(len(manifest), "hashing") as advance:
        infos = probe_many(manifest.absolute(), progress=advance)
    plan = plan_embed(store, manifest, infos)
    _refuse_if_strict(strict, plan.rejects, len(manifest))
    writer = _PartWriter(store, manifest, infos, metadata, part_size)
    if plan.reuse:
        writer.add([i for i, _ in plan.reuse], store.rows_embeddings([row for _, row in plan.reuse]))

    firsts = [rows[0] for rows in plan.to_embed.values()]
    done = np.zeros(len(firsts), bool)
    abs_paths = manifest.absolute()
    result = EmbedResult(present=plan.present, reused=len(plan.reuse), rejects=list(plan.rejects),
                         replicas=strategy.num_replicas_in_sync if strategy is not None else 1)
    with progress(len(firsts), "embedding") as advance:
        for emb, idx in iter_embeddings(model, record, [abs_paths[i] for i in firsts], batch_size,
                                        strategy=strategy):
            done[idx] = True
            groups = [plan.to_embed[infos[firsts[j]].sha256] for j in idx]
            writer.add([r for g in groups for r in g], np.repeat(emb, [len(g) for g in groups], axis=0))
            result.embedded += len(idx)
            result.reused += sum(len(g) - 1 for g in groups)
            advance(len(idx))
    writer.flush()
    result.parts = writer.written
    result.rejects += [(manifest.paths[rows], UNDECODABLE) for j in np.nonzero(~done)[0]
                       for rows in plan.to_embed[infos[firsts[j]].sha256]]
    write_rejects(store.directory / shard_file(REJECTS_FILE, shard), result.rejects)
    _refuse_if_strict(strict, result.rejects, len(manifest))
    if config is not None:
        save_config(config, store.directory / shard_file(CONFIG_FILE, shard))
    return result


def write_rejects(path: Path, rejects: Sequence[tuple[str, str]]) -> None:
    """``path,reason`` CSV of this run's rejected files (an empty file with a header when none)."""
    atomic_write_text(path, csv_text([["path", "reason"], *[list(r) for r in rejects]]))


def _refuse_if_strict(strict: bool, rejects: Sequence[tuple[str, str]], total: int) -> None:
    if strict and rejects:
        path, reason = rejects[0]
        raise InputError(f"{path}: {reason} ({len(rejects)} of {total} images rejected; --strict stops here, "
                         "drop --strict to embed the rest and list rejects in rejects.csv)")

