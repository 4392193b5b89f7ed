"""openTSNE maps of an embedding store, saved without pickle so new cells can be placed onto them later.

A map is fitted with PCA initialisation, perplexity 30 and Euclidean distances on exact nearest
neighbours, optionally after PCA to 50 dimensions. openTSNE runs two phases: ``early_exaggeration_iter``
steps (250) with exaggeration 12, then ``n_iter`` steps (1000) of normal optimisation; openTSNE's
``n_iter`` counts only the second phase, so a default map runs 1,250 gradient steps in total.

The repulsive forces use Barnes-Hut (``theta`` 0.5) by default, not openTSNE's automatic choice (FFT
interpolation above 10,000 points): FFT's grid grows with the map's extent and its FFTs run on one
thread, so on 17,092 points and 2 cores Barnes-Hut is 3.7x faster (61 s vs 227 s) and reaches a lower
exact KL divergence (0.829 vs 0.859; benchmarks/RESULTS.md). ``gradient="fft"`` is there for maps of
hundreds of thousands of points, where FFT scales better.

The saved map is plain arrays (``map.npz``: reference features after PCA, 2-d coordinates, PCA mean and
components, keys) plus ``map.json`` (settings, source encoder, sha256 of the arrays). No pickle is
involved: :meth:`TsneMap.transform` rebuilds openTSNE's embedding object from these arrays and places new
points with ``TSNEEmbedding.transform`` (each new point optimised against the fixed reference only).
openTSNE and scikit-learn load only to fit or place (:mod:`.affinities`): reading a map, or refusing a
missing one, does not wait for them.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import atomic_write_bytes, atomic_write_text, from_dict, to_dict
from ..errors import InputError, MismatchError
from ..store.matrix import BLOCK_ROWS, as_embeddings, row_blocks

MAP_ARRAYS = "map.npz"
MAP_HEADER = "map.json"
MAP_FORMAT = 1
GRADIENT_METHODS = ("bh", "fft")


@dataclass(frozen=True)
class TsneConfig:
    """Settings of one t-SNE map (saved next to it)."""

    perplexity: float = 30.0
    n_iter: int = 1000  # normal-phase iterations, after early exaggeration (openTSNE's meaning)
    early_exaggeration_iter: int = 250
    early_exaggeration: float = 12.0
    pca_dims: int = 50  # 0: run t-SNE on the raw embedding
    initialization: str = "pca"
    metric: str = "euclidean"
    seed: int = 0
    n_jobs: int = -1
    gradient: str = "bh"  # repulsive forces: "bh" (Barnes-Hut) or "fft" (interpolation)
    theta: float = 0.5  # Barnes-Hut accuracy (smaller: more exact, slower)

    @property
    def total_iterations(self) -> int:
        return int(self.early_exaggeration_iter) + int(self.n_iter)

    def validate(self, n_points: int) -> None:
        if n_points < 4:
            raise InputError(f"t-SNE needs at least 4 points, got {n_points}")
        if not 1.0 <= self.perplexity:
            raise InputError(f"perplexity {self.perplexity} must be at least 1")
        if 3 * self.perplexity >= n_points:
            raise InputError(f"perplexity {self.perplexity} is too large for {n_points} points "
                             f"(needs 3 x perplexity < points; use --perplexity {max(1, (n_points - 1) // 3)})")
        if self.n_iter < 1 or self.early_exaggeration_iter < 0:
            raise InputError(f"iterations must be positive (n_iter={self.n_iter}, "
                             f"early_exaggeration_iter={self.early_exaggeration_iter})")
        if self.pca_dims < 0:
            raise InputError(f"PCA dimensions {self.pca_dims} must be 0 (off) or positive")
        if self.gradient not in GRADIENT_METHODS:
            raise InputError(f"gradient method {self.gradient!r} is not one of {', '.join(GRADIENT_METHODS)}")
        if not 0.0 < self.theta <= 1.0:
            raise InputError(f"Barnes-Hut theta {self.theta} must be in (0, 1]")

    @property
    def gradient_options(self) -> dict:
        """openTSNE keyword arguments for the repulsive-force approximation."""
        if self.gradient == "bh":
            return {"negative_gradient_method": "bh", "theta": self.theta}
        return {"negative_gradient_method": "fft"}


@dataclass
class TsneMap:
    """A fitted map: reference features (after PCA), their 2-d coordinates, and how to project new vectors."""

    config: TsneConfig
    features: np.ndarray  # (N, d) float32, the space t-SNE's neighbours are found in
    coords: np.ndarray  # (N, 2) float64, centred as openTSNE's transform expects
    keys: list[str]
    pca_mean: np.ndarray | None = None  # (D,)
    pca_components: np.ndarray | None = None  # (d, D)
    input_dim: int = 0
    source: dict = field(default_factory=dict)  # e.g. store directory and encoder fingerprint
    kl_divergence: float = float("nan")

    # ------------------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, vectors: np.ndarray, keys: Sequence[str] | None = None, config: TsneConfig = TsneConfig(),
            source: dict | None = None, progress: Callable[[int], None] | None = None) -> TsneMap:
        """Fit a map of ``vectors`` (N, D) whose rows are named by ``keys`` (default: their positions);
        ``progress(n)`` is called as iterations complete."""
        vectors = as_embeddings(vectors, "embeddings")
        keys = [str(i) for i in range(len(vectors))] if keys is None else keys
        if len(keys) != len(vectors):
            raise InputError(f"{len(keys)} keys for {len(vectors)} embeddings")
        config.validate(len(vectors))
        mean, components = _fit_pca(vectors, config.pca_dims, config.seed)
        features = _project(vectors, mean, components)
        from openTSNE import TSNE

        from .affinities import exact_affinities

        affinities = exact_affinities(features, config)
        step = 50
        callback = (lambda iteration, error, embedding: progress(step)) if progress else None
        tsne = TSNE(n_components=2, perplexity=config.perplexity, metric=config.metric,
                    initialization=config.initialization, n_iter=config.n_iter,
                    early_exaggeration_iter=config.early_exaggeration_iter,
                    early_exaggeration=config.early_exaggeration, **config.gradient_options,
                    random_state=config.seed, n_jobs=config.n_jobs,
                    callbacks=callback, callbacks_every_iters=step)
        embedding = tsne.fit(features, affinities=affinities)
        coords = np.asarray(embedding, dtype=np.float64)
        coords -= (coords.max(axis=0) + coords.min(axis=0)) / 2  # transform() centres the same way
        return cls(config, features, coords, [str(k) for k in keys], mean, components, vectors.shape[1],
                   dict(source or {}), float(embedding.kl_divergence or np.nan))

    # ------------------------------------------------------------------------------ placing new points
    def project(self, vectors: np.ndarray) -> np.ndarray:
        """New embedding vectors → the map's feature space (the same PCA), block by block (a million float16
        or float32 rows are never converted or centred whole)."""
        vectors = np.asarray(vectors)
        if vectors.ndim == 2 and vectors.shape[1] != self.input_dim:
            raise MismatchError(f"query embeddings have dimension {vectors.shape[1]}, the map was fitted on "
                                f"{self.input_dim}")
        blocks = [_project(block, self.pca_mean, self.pca_components) for _, block in row_blocks(vectors)]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

    def transform(self, vectors: np.ndarray, n_iter: int = 250, block_rows: int = BLOCK_ROWS) -> np.ndarray:
        """Place new points onto the fixed map (openTSNE ``transform``: each point optimised against the
        reference only, perplexity 5, median initialisation over 25 neighbours, 250 iterations). Points do
        not interact, so they are placed ``block_rows`` at a time (bounded memory for a million points)."""
        return self.place(self.project(vectors), n_iter, block_rows)

    def place(self, features: np.ndarray, n_iter: int = 250, block_rows: int = BLOCK_ROWS) -> np.ndarray:
        """:meth:`transform` of points already in the map's feature space (:meth:`project`, which a store's
        rows can go through one part at a time)."""
        from openTSNE import TSNEEmbedding

        from .affinities import QueryAffinities

        reference = TSNEEmbedding(self.coords.copy(), QueryAffinities(self.features, self.config),
                                  **self.config.gradient_options, random_state=self.config.seed,
                                  n_jobs=self.config.n_jobs)
        placed = [reference.transform(features[start:start + block_rows],
                                      perplexity=min(5.0, (len(self.features) - 1) / 3),
                                      k=min(25, len(self.features)), n_iter=n_iter)
                  for start in range(0, len(features), block_rows)]
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in placed])

    # ------------------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``map.npz`` and ``map.json`` (arrays' sha256 inside) atomically; returns the folder."""
        directory = Path(directory)
        arrays = {"features": self.features.astype(np.float32), "coords": self.coords,
                  "keys": np.asarray(self.keys, dtype=str)}
        if self.pca_components is not None:
            arrays.update(pca_mean=self.pca_mean, pca_components=self.pca_components)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        atomic_write_bytes(directory / MAP_ARRAYS, data)
        header = {"format": MAP_FORMAT, "config": to_dict(self.config), "points": len(self.keys),
                  "input_dim": int(self.input_dim), "source": self.source,
                  "kl_divergence": self.kl_divergence, "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_text(directory / MAP_HEADER, json.dumps(header, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TsneMap:
        """Read a saved map; refuses a folder that is not one or whose arrays changed since saving."""
        directory = Path(directory)
        header_path, arrays_path = directory / MAP_HEADER, directory / MAP_ARRAYS
        if not header_path.is_file() or not arrays_path.is_file():
            raise InputError(f"{directory}: not a t-SNE map (needs {MAP_HEADER} and {MAP_ARRAYS}; "
                             "make one with hemoembed tsne STORE --out MAP)")
        try:
            header = json.loads(header_path.read_text())
            config = from_dict(TsneConfig, header["config"], source=str(header_path))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{header_path}: unreadable map header ({exc})") from None
        if int(header.get("format", 0)) > MAP_FORMAT:
            raise MismatchError(f"{header_path}: map format {header['format']} is newer than this hemoembed reads")
        data = arrays_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != header.get("sha256"):
            raise MismatchError(f"{arrays_path}: contents changed since the map was saved (sha256 differs from "
                                f"{header_path.name})")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            has_pca = "pca_components" in npz
            return cls(config, npz["features"], npz["coords"], [str(k) for k in npz["keys"]],
                       npz["pca_mean"] if has_pca else None, npz["pca_components"] if has_pca else None,
                       int(header["input_dim"]), dict(header.get("source") or {}),
                       float(header.get("kl_divergence", np.nan)))



def _fit_pca(vectors: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """PCA to ``dims`` (skipped when 0 or not fewer than the input's rank bound)."""
    if dims == 0 or dims >= min(vectors.shape):
        return None, None
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dims, random_state=seed).fit(vectors)
    return pca.mean_.astype(np.float32), pca.components_.astype(np.float32)


def _project(vectors: np.ndarray, mean: np.ndarray | None, components: np.ndarray | None) -> np.ndarray:
    if components is None:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    return np.ascontiguousarray((vectors - mean) @ components.T, dtype=np.float32)
