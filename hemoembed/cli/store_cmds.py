"""Embedding store commands: embed, store info, neighbors."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import main
from .common import (
    echo,
    images_argument,
    overwrite_option,
    prepare_output_file,
    progress,
)


@main.command()
@click.argument("encoder", type=click.Path(path_type=Path))
@images_argument
@click.option("--store", "store_dir", type=click.Path(path_type=Path), required=True,
              help="Store folder: created, or appended to when it was built by the same encoder.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per forward pass.")
@click.option("--part-size", type=int, default=2048, show_default=True,
              help="Images per Parquet part (a killed run loses at most one part's work).")
@click.option("--metadata", default=None,
              help="Comma-separated manifest columns to store (default: every column but 'label'; '' for none). "
                   "Never store labels: join them from a CSV at task time.")
@click.option("--strict", is_flag=True, help="Fail on the first unreadable image instead of listing it in rejects.csv.")
@overwrite_option
def embed(encoder: Path, manifest, store_dir: Path, batch_size: int, part_size: int, metadata: str | None,
          strict: bool, overwrite: bool) -> None:
    """Embed images with a frozen ENCODER into an append-only embedding store.

    Images already in the store (same sha256) are not embedded again; unreadable images are listed in
    STORE/rejects.csv with the reason and the run goes on. Rerun after an interruption to complete it.

    \b
    Example:
      hemoembed embed runs/pbc64/encoder.keras ../shared/data/pbc256 --store stores/pbc64
      hemoembed embed enc.keras manifest.csv --image-root images --store stores/demo --batch-size 32
    """
    from ..model.encoder import load_encoder
    from ..store.embed import EmbedConfig, default_metadata_columns, embed_to_store

    model, _ = load_encoder(encoder)
    if metadata is None:
        columns = default_metadata_columns(manifest)
    else:
        columns = [c.strip() for c in metadata.split(",") if c.strip()]
    config = EmbedConfig(encoder=str(encoder), images=manifest.source, image_root=str(manifest.root),
                         batch_size=batch_size, part_size=part_size, strict=strict, metadata_columns=columns)
    store, result = embed_to_store(model, manifest, store_dir, overwrite=overwrite, batch_size=batch_size,
                                   part_size=part_size, strict=strict, metadata=columns, config=config,
                                   progress=progress)
    echo(result.summary())
    if result.rejected:
        echo(f"rejected files and reasons: {store_dir / 'rejects.csv'}")
    echo(f"store {store_dir}: {len(store)} images, encoder {store.fingerprint[:12]}")


@main.group("store")
def store_group() -> None:
    """Inspect embedding stores."""


@store_group.command("info")
@click.argument("store_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full description as JSON.")
def store_info(store_dir: Path, as_json: bool) -> None:
    """Counts, encoder fingerprint, dimension, parts and metadata columns of a store.

    \b
    Example:
      hemoembed store info stores/pbc64
    """
    from ..store.store import EmbeddingStore

    info = EmbeddingStore.open(store_dir).info()
    if as_json:
        echo(json.dumps(info, indent=2))
        return
    echo(f"store        {info['directory']}")
    echo(f"images       {info['rows']} rows, {info['unique_images']} unique (sha256)")
    echo(f"encoder      {info['fingerprint']}")
    echo(f"embedding    {info['dim']} x {info['dtype']}")
    echo(f"preprocess   {info['record']}")
    echo(f"parts        {info['parts']} ({sum(info['part_rows'].values())} rows written)")
    echo(f"metadata     {', '.join(info['metadata_columns']) or 'none'}")
    echo(f"created      {info['created']} by hemoembed {info['hemoembed_version']} (format {info['format_version']})")


@main.command()
@click.argument("store_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--path", "stored_paths", multiple=True, help="A stored path (relative to the image root); repeatable.")
@click.option("--encoder", type=click.Path(path_type=Path), default=None,
              help="Encoder that built the store, to embed --image files.")
@click.option("--image", "images", type=click.Path(path_type=Path), multiple=True,
              help="An image file to query with (needs --encoder); repeatable.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query.")
@click.option("--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the neighbours as CSV.")
@click.option("--gallery", type=click.Path(path_type=Path), default=None,
              help="Also draw each query and its neighbours (label = folder name, distance) as one PNG.")
@click.option("--image-root", type=click.Path(path_type=Path), default=None,
              help="Folder the stored paths are relative to (default: the one recorded by embed).")
@overwrite_option
def neighbors(store_dir: Path, stored_paths: tuple[str, ...], encoder: Path | None, images: tuple[Path, ...],
              k: int, metric: str, out: Path | None, overwrite: bool, gallery: Path | None = None,
              image_root: Path | None = None) -> None:
    """Exact nearest stored images of stored paths or of new image files.

    \b
    Examples:
      hemoembed neighbors stores/pbc64 --path PBC_dataset_normal_DIB/basophil/BA_100102.jpg -k 5
      hemoembed neighbors stores/pbc64 --encoder runs/pbc64/encoder.keras --image cell.jpg --out nn.csv
    """
    from ..config import atomic_write_text, csv_text
    from ..errors import InputError
    from ..store.store import EmbeddingStore

    if bool(stored_paths) == bool(images):
        raise InputError("give either --path STORED_PATH or --encoder ENC --image FILE (not both, not neither)")
    if out is not None:
        prepare_output_file(out, overwrite)
    store = EmbeddingStore.open(store_dir)
    if stored_paths:
        queries, vectors, exclude = _stored_queries(store, stored_paths)
    else:
        queries, vectors = _image_queries(store, encoder, images)
        exclude = None
    indices, distances = store.neighbors(vectors, k, metric=metric, exclude=exclude)
    paths, metadata = store.paths, store.metadata_columns
    meta = {c: store.column(c) for c in metadata}
    rows = [["query", "rank", "neighbor", "distance", *metadata]]
    for q, query in enumerate(queries):
        for rank, (i, d) in enumerate(zip(indices[q], distances[q]), start=1):
            rows.append([query, str(rank), paths[i], f"{d:.6f}", *(meta[c][i] for c in metadata)])
    if out is not None:
        atomic_write_text(out, csv_text(rows))
        echo(f"{len(rows) - 1} neighbours of {len(queries)} queries written to {out}")
    else:
        for row in rows[1:]:
            echo("  ".join(row))
    if gallery is not None:
        from ..explain.gallery import gallery_for_store

        png = gallery_for_store(store, queries, indices, distances, gallery, image_root, metric, overwrite)
        echo(f"gallery: {png}")


def _stored_queries(store, stored_paths):
    import numpy as np

    from ..errors import InputError
    from ..store.store import _normalise_key

    index = {p: i for i, p in enumerate(store.paths)}
    rows = []
    for path in stored_paths:
        key = _normalise_key(path, "path")
        if key not in index:
            example = f", e.g. {store.paths[0]!r}" if len(store) else ", and the store is empty"
            raise InputError(f"{store.directory}: path {path!r} is not in the store "
                             f"(paths are relative to the image root{example})")
        rows.append(index[key])
    rows = np.asarray(rows, np.int64)
    return list(stored_paths), store.embeddings()[rows], rows


def _image_queries(store, encoder, images):
    from ..errors import InputError
    from ..model.encoder import fingerprint, load_encoder
    from ..store.embed import embed_images

    if encoder is None:
        raise InputError("--image needs --encoder ENC (the encoder that built the store)")
    model, record = load_encoder(encoder)
    store.check_encoder(fingerprint(model), record)
    for image in images:
        if not image.is_file():
            raise InputError(f"{image}: image file not found")
    vectors, ok = embed_images(model, record, [str(p) for p in images], batch_size=32)
    failed = sorted(set(range(len(images))) - set(ok.tolist()))
    if failed:
        raise InputError(f"{images[failed[0]]}: cannot decode image "
                         f"({len(failed)} of {len(images)} query images failed)")
    return [str(p) for p in images], vectors
