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
        import pyarrow as pa

        metadata = store.metadata_columns
        found = store.table().take(pa.array(self.indices.reshape(-1)))  # only the rows found, not whole columns
        columns = [found.column(c).to_pylist() for c in ["path", *metadata]]
        rows = [["query", "rank", "neighbor", "distance", *metadata]]
        j = 0
        for q, query in enumerate(self.queries):
            for rank, d in enumerate(self.distances[q], start=1):
                rows.append([query, str(rank), columns[0][j], f"{d:.6f}", *(c[j] for c in columns[1:])])
                j += 1
        return rows


def find_neighbours(store, *, paths: Sequence[str] = (), encoder: str | os.PathLike | None = None,
                    images: Sequence[str | os.PathLike] = (), k: int = 10, metric: str = "cosine",
                    approximate: bool = False) -> Neighbours:
    """The ``k`` nearest stored cells of stored ``paths`` (each never its own neighbour) or of image files
    ``images`` embedded with ``encoder`` (the encoder that built the store, checked by fingerprint);
    ``approximate``: through the store's saved index (``hemoembed store index``)."""
    if bool(paths) == bool(images):
        raise InputError("give either --path STORED_PATH or --encoder ENC --image FILE (not both, not neither)")
    if paths:
        queries, vectors, exclude = _stored_queries(store, paths)
    else:
        queries, vectors = _image_queries(store, encoder, images)
        exclude = None
    indices, distances = store.neighbours(vectors, k, metric=metric, exclude=exclude, approximate=approximate)
    return Neighbours(queries, indices, distances, metric)


def _stored_queries(store, stored_paths: Sequence[str]):
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..store.join import normalise_key

    stored = store.table().column("path")  # looked up in Arrow: no Python dict of a million paths
    found = pc.index_in(pa.array([normalise_key(p, "path") for p in stored_paths], pa.string()), value_set=stored)
    for path, row in zip(stored_paths, found.to_pylist()):
        if row is None:
            example = f", e.g. {stored[0].as_py()!r}" if len(stored) else ", and the store is empty"
            raise InputError(f"{store.directory}: path {path!r} is not in the store "
                             f"(paths are relative to the image root{example})")
    rows = np.asarray(found.to_pylist(), np.int64)
    return list(stored_paths), store.rows_embeddings(rows), rows


def _image_queries(store, encoder: str | os.PathLike | None, images: Sequence[str | os.PathLike]):
    from ..data.imageio import probe
    from ..model.options import encoder_file

    if encoder is None:
        raise InputError("--image needs --encoder ENC (the encoder that built the store)")
    for image in images:  # the usability rule of embed and check, with its reason
        info = probe(image)
        if not info.ok:
            raise InputError(f"{image}: {info.error}")
    encoder_file(encoder)
    from ..model.encoder import fingerprint, load_encoder  # TensorFlow: only once the query images are usable
    from ..store.embed import embed_images

    model, record = load_encoder(encoder)
    store.check_encoder(fingerprint(model), record)
    vectors, ok = embed_images(model, record, [str(p) for p in images], batch_size=32)
    failed = sorted(set(range(len(images))) - set(ok.tolist()))
    if failed:
        raise InputError(f"{images[failed[0]]}: cannot decode image "
                         f"({len(failed)} of {len(images)} query images failed)")
    return [str(p) for p in images], vectors
