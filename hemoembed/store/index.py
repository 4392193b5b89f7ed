"""Approximate nearest neighbours for large stores: a faiss inverted-file index saved inside the store.

Exact search (:mod:`.neighbors`) reads every stored row per query; at a million rows that is a second per
query. The index (faiss ``IndexIVFScalarQuantizer``: k-means cells over the rows, each row kept as float16)
answers a query by scanning only the ``nprobe`` cells nearest to it. faiss was chosen over hnswlib (last
release 2023) and pynndescent (a graph build that costs hours on 1M x 1280 with 2 cores): it is maintained,
installs as a wheel, and an IVF index builds in minutes on a CPU because only a sample trains the cells.

``build`` trains the cells on a sample, adds the rows part by part (never the whole matrix in memory), then
measures recall@k against exact search on a sample of stored rows and keeps the smallest ``nprobe`` that
reaches ``target_recall``: the index reports its own quality (``index.json``). The index records which
parts it covers; once the store has new parts (or was rebuilt) it is refused until rebuilt.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import atomic_write_text
from ..errors import InputError, MismatchError
from .neighbors import METRICS, knn_blocks
from .store import EmbeddingStore

INDEX_DIR = "index"
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TRAIN_PER_CELL = 64  # k-means training rows per cell (faiss warns below 39)


@dataclass
class IndexInfo:
    """What ``index/<metric>.json`` records: the store state covered, settings and measured quality."""

    metric: str = "cosine"
    rows: int = 0
    parts: list[str] = field(default_factory=list)
    store_id: str = ""
    fingerprint: str = ""
    nlist: int = 0
    nprobe: int = 0
    k: int = 10
    target_recall: float = 0.95
    recall: float = 0.0  # recall@k against exact search on ``recall_queries`` stored rows
    recall_queries: int = 0
    recall_by_nprobe: dict = field(default_factory=dict)
    build_seconds: float = 0.0
    bytes: int = 0
    faiss_version: str = ""


def default_nlist(rows: int) -> int:
    """Cells: about sqrt(rows) (a power of two), but at most one per ``TRAIN_PER_CELL`` rows."""
    nlist = 2 ** int(round(np.log2(max(1.0, np.sqrt(rows)))))
    return int(max(1, min(nlist, rows // TRAIN_PER_CELL)))


def _paths(store: EmbeddingStore, metric: str) -> tuple[Path, Path]:
    folder = store.directory / INDEX_DIR
    return folder / f"{metric}.faiss", folder / f"{metric}.json"


def _prepared(block: np.ndarray, metric: str) -> np.ndarray:
    """float32 rows as faiss expects them: unit rows for cosine (inner product), as they are for euclidean."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block = block / np.where(norms > 0, norms, 1.0)
    return block


class NeighbourIndex:
    """A built (or loaded) approximate index of one store for one metric."""

    def __init__(self, index, info: IndexInfo) -> None:
        self.index = index
        self.info = info

    @classmethod
    def build(cls, store: EmbeddingStore, metric: str = "cosine", nlist: int | None = None, k: int = 10,
              target_recall: float = 0.95, recall_queries: int = 200, seed: int = 0,
              progress=None) -> NeighbourIndex:
        """Build, tune ``nprobe`` to ``target_recall`` and save the index of ``store`` (see the module)."""
        import faiss

        if metric not in METRICS:
            raise InputError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        if not 0 < target_recall <= 1:
            raise InputError(f"target recall {target_recall} must be in (0, 1]")
        started = time.perf_counter()
        n = len(store)
        nlist = default_nlist(n) if nlist is None else int(nlist)
        if n < 2 or not 1 <= nlist <= n:
            raise InputError(f"{store.directory}: cannot index {n} rows in {nlist} cells (needs 1 <= cells <= rows)")
        rng = np.random.default_rng(seed)
        train_rows = np.sort(rng.choice(n, size=min(n, TRAIN_PER_CELL * nlist), replace=False))
        index = _new_index(store.dim, nlist, metric)
        index.train(_prepared(store.rows_embeddings(train_rows), metric))
        for _, block in store.iter_embeddings():
            index.add(_prepared(block, metric))
            if progress is not None:
                progress(len(block))
        built = cls(index, IndexInfo(metric=metric, rows=n, parts=[p.name for p in store.part_files()],
                                     store_id=store.header.store_id, fingerprint=store.fingerprint,
                                     nlist=nlist, k=k, target_recall=float(target_recall),
                                     faiss_version=faiss.__version__))
        built._tune(store, min(recall_queries, n), k, rng)
        built.info.build_seconds = round(time.perf_counter() - started, 2)
        built.save(store)
        return built

    def _tune(self, store: EmbeddingStore, queries: int, k: int, rng: np.random.Generator) -> None:
        """Smallest ``nprobe`` whose recall@k against exact search reaches the target (stored rows as queries,
        each excluded from its own answer)."""
        rows = np.sort(rng.choice(len(store), size=queries, replace=False))
        vectors = store.rows_embeddings(rows)
        exact, _ = knn_blocks(vectors, store.iter_embeddings(), len(store), k, self.info.metric, exclude=rows)
        for nprobe in [p for p in NPROBES if p <= self.info.nlist] + [self.info.nlist]:
            self.index.nprobe = nprobe
            found, _ = self.search(vectors, k, exclude=rows)
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)]))
            self.info.recall_by_nprobe[str(nprobe)] = round(recall, 4)
            self.info.nprobe, self.info.recall = nprobe, recall
            if recall >= self.info.target_recall:
                break
        self.info.recall_queries = queries

    def search(self, vectors: np.ndarray, k: int = 10,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest rows: (indices (Q, k) int64, distances (Q, k) float32) like exact search
        (cosine: 1 - cos; euclidean: L2); ``exclude[q]`` (or -1) is a row never returned for query ``q``."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if vectors.shape[1] != self.index.d:
            raise MismatchError(f"query vectors have dimension {vectors.shape[1]}, the index has {self.index.d}")
        extra = 0 if exclude is None else 1
        k_all = min(int(k) + extra, self.index.ntotal)
        scores, found = self.index.search(_prepared(vectors, self.info.metric), k_all)
        if self.info.metric == "cosine":
            distances = 1.0 - scores
        else:
            distances = np.sqrt(np.maximum(scores, 0.0))
        keep = k_all - extra
        out_i = np.empty((len(vectors), keep), np.int64)
        out_d = np.empty((len(vectors), keep), np.float32)
        for q in range(len(vectors)):
            ok = found[q] >= 0
            if exclude is not None:
                ok &= found[q] != exclude[q]
            i, d = found[q][ok][:keep], distances[q][ok][:keep]
            out_i[q, :len(i)], out_d[q, :len(d)] = i, d
            out_i[q, len(i):], out_d[q, len(d):] = -1, np.inf  # fewer rows in the probed cells than k
        return out_i, out_d

    # ----------------------------------------------------------------------------------- persistence
    def save(self, store: EmbeddingStore) -> Path:
        """Write ``index/<metric>.faiss`` and ``index/<metric>.json`` atomically."""
        import faiss

        data_path, info_path = _paths(store, self.info.metric)
        data_path.parent.mkdir(exist_ok=True)
        self.info.nprobe = int(self.index.nprobe) if self.info.nprobe == 0 else self.info.nprobe
        tmp = data_path.with_name(f".{data_path.name}.tmp-{os.getpid()}")
        try:
            faiss.write_index(self.index, str(tmp))
            os.replace(tmp, data_path)
        finally:
            tmp.unlink(missing_ok=True)
        self.info.bytes = data_path.stat().st_size
        atomic_write_text(info_path, json.dumps(asdict(self.info), indent=2) + "\n")
        return data_path

    @classmethod
    def load(cls, store: EmbeddingStore, metric: str = "cosine") -> NeighbourIndex:
        """The saved index of ``store`` for ``metric``; refused when missing or when the store changed."""
        import faiss

        data_path, info_path = _paths(store, metric)
        command = f"hemoembed store index {store.directory} --metric {metric}"
        rebuild = f"rebuild it with: {command}"
        if not info_path.is_file() or not data_path.is_file():
            raise InputError(f"{store.directory}: no approximate {metric} index; build it with: {command}")
        try:
            info = IndexInfo(**json.loads(info_path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"{info_path}: unreadable index record ({exc}); {rebuild}") from None
        parts = [p.name for p in store.part_files()]
        if (info.parts, info.store_id, info.fingerprint) != (parts, store.header.store_id, store.fingerprint):
            raise MismatchError(f"{store.directory}: the {metric} index covers {info.rows} rows in {len(info.parts)} "
                                f"parts, the store now has {len(parts)} parts; {rebuild}")
        if data_path.stat().st_size != info.bytes:
            raise MismatchError(f"{data_path}: size differs from {info_path.name}; {rebuild}")
        index = faiss.read_index(str(data_path))
        if index.ntotal != info.rows or index.d != store.dim:
            raise MismatchError(f"{data_path}: holds {index.ntotal} x {index.d}, the record says "
                                f"{info.rows} x {store.dim}; {rebuild}")
        index.nprobe = info.nprobe
        return cls(index, info)


def saved_index(store: EmbeddingStore, metric: str = "cosine") -> tuple[NeighbourIndex | None, str]:
    """``(index, "")`` when ``store`` has a saved index covering it as it is now; otherwise ``(None, why)``, with
    ``why`` empty when there is no index at all. For long-lived readers (the review app) that use the index
    when they can and fall back to exact search, saying why, instead of refusing to start."""
    data_path, info_path = _paths(store, metric)
    if not data_path.is_file() and not info_path.is_file():
        return None, ""
    try:
        return NeighbourIndex.load(store, metric), ""
    except (InputError, MismatchError) as exc:
        return None, str(exc)


def _new_index(dim: int, nlist: int, metric: str):
    import faiss

    kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, kind)
    index.own_fields = True
    quantizer.this.disown()
    index.cp.niter = 10  # k-means iterations: cells only need to be good enough for nprobe to find neighbours
    return index
