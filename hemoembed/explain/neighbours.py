"""Nearest stored neighbours of stored cells or of new image files (``hemoembed neighbours``)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass
class Neighbours:
    """Per query (a stored path or an image file): its k nearest stored rows and their distances."""

    queries: list[str]
    indices: np.ndarray  # (Q, k) store rows
    distances: np.ndarray  # (Q, k)
    metric: str = "cosine"

    def rows(self, store) -> list[list[str]]:
        """CSV rows (header first): query, rank, neighbour path, distance and the store's metadata columns."""
        paths, metadata = store.paths, store.metadata_columns
        meta = {c: store.column(c) for c in metadata}
        rows = [["query", "rank", "neighbor", "distance", *metadata]]
        for q, query in enumerate(self.queries):
            for rank, (i, d) in enumerate(zip(self.indices[q], self.distances[q]), start=1):
                rows.append([query, str(rank), paths[i], f"{d:.6f}", *(meta[c][i] for c in metadata)])
        return rows


def find_neighbours(store, *, paths: Sequence[str] = (), encoder: str | os.PathLike | None = None,
                    images: Sequence[str | os.PathLike] = (), k: int = 10, metric: str = "cosine") -> Neighbours:
    """The ``k`` nearest stored cells of stored ``paths`` (each never its own neighbour) or of image files
    ``images`` embedded with ``encoder`` (the encoder that built the store, checked by fingerprint)."""
    if bool(paths) == bool(images):
        raise InputError("give either --path STORED_PATH or --encoder ENC --image FILE (not both, not neither)")
    if paths:
        queries, vectors, exclude = _stored_queries(store, paths)
    else:
        queries, vectors = _image_queries(store, encoder, images)
        exclude = None
    indices, distances = store.neighbours(vectors, k, metric=metric, exclude=exclude)
    return Neighbours(queries, indices, distances, metric)


def _stored_queries(store, stored_paths: Sequence[str]):
    from ..store.store import normalise_key

    index = {p: i for i, p in enumerate(store.paths)}
    rows = []
    for path in stored_paths:
        key = normalise_key(path, "path")
        if key not in index:
            example = f", e.g. {store.paths[0]!r}" if len(store) else ", and the store is empty"
            raise InputError(f"{store.directory}: path {path!r} is not in the store "
                             f"(paths are relative to the image root{example})")
        rows.append(index[key])
    rows = np.asarray(rows, np.int64)
    return list(stored_paths), store.embeddings()[rows], rows


def _image_queries(store, encoder: str | os.PathLike | None, images: Sequence[str | os.PathLike]):
    from pathlib import Path

    from ..model.encoder import fingerprint, load_encoder
    from ..store.embed import embed_images

    if encoder is None:
        raise InputError("--image needs --encoder ENC (the encoder that built the store)")
    model, record = load_encoder(encoder)
    store.check_encoder(fingerprint(model), record)
    for image in images:
        if not Path(image).is_file():
            raise InputError(f"{image}: image file not found")
    vectors, ok = embed_images(model, record, [str(p) for p in images], batch_size=32)
    failed = sorted(set(range(len(images))) - set(ok.tolist()))
    if failed:
        raise InputError(f"{images[failed[0]]}: cannot decode image "
                         f"({len(failed)} of {len(images)} query images failed)")
    return [str(p) for p in images], vectors
