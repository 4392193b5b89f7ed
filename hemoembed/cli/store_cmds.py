"""Embedding store commands: embed, store info / convert / index, neighbours."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import main
from .common import (
    POSITIVE,
    FiniteFloat,
    deprecated_command,
    echo,
    images_argument,
    overwrite_option,
    prepare_output_dir,
    prepare_output_file,
    progress,
    seed_option,
)


@main.command()
@click.argument("encoder", type=click.Path(path_type=Path))
@images_argument
@click.option("--store", "store_dir", type=click.Path(path_type=Path), required=True,
              help="Store folder: created, or appended to when it was built by the same encoder.")
@click.option("--batch-size", type=POSITIVE, default=64, show_default=True, help="Images per forward pass.")
@click.option("--part-size", type=POSITIVE, default=2048, show_default=True,
              help="Images per Parquet part (a killed run loses at most one part's work).")
@click.option("--metadata", default=None,
              help="Comma-separated manifest columns to store (default: every column but 'label'; '' for none). "
                   "Never store labels: join them from a CSV at task time.")
@click.option("--strict", is_flag=True, help="Fail on the first unreadable image instead of listing it in rejects.csv.")
@click.option("--shard", default=None, metavar="I/N",
              help="Embed only shard I of N (1-based) of the images, beside the other shards' writers (on this "
                   "machine or others sharing the store's folder); the shards together fill the store.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default=None,
              help="How a new store keeps embeddings [float32]; float16 halves disk and memory.")
@click.option("--strategy", type=click.Choice(["one", "mirrored", "auto"]), default="one", show_default=True,
              help="Inference devices: one, or mirrored over every local GPU (auto: mirrored when there are several).")
@overwrite_option
def embed(encoder: Path, manifest, store_dir: Path, batch_size: int, part_size: int, metadata: str | None,
          strict: bool, overwrite: bool, shard: str | None = None, dtype: str | None = None,
          strategy: str = "one") -> None:
    """Embed images with a frozen ENCODER into an append-only embedding store.

    Images already in the store (same sha256) are not embedded again; unreadable images are listed in
    STORE/rejects.csv with the reason and the run goes on. Rerun after an interruption to complete it.

    \b
    Examples:
      hemoembed embed runs/pbc64/encoder.keras ../shared/data/pbc256 --store stores/pbc64
      hemoembed embed enc.keras manifest.csv --image-root images --store stores/demo --batch-size 32
      hemoembed embed enc.keras archive/ --store stores/big --shard 1/2 &   # two writers, one store
      hemoembed embed enc.keras archive/ --store stores/big --shard 2/2
    """
    from ..store.build import build
    from ..store.embed import REJECTS_FILE, parse_shard, shard_file

    columns = None if metadata is None else [c.strip() for c in metadata.split(",") if c.strip()]
    parsed = parse_shard(shard) if shard else None
    store, result = build(encoder, manifest, store_dir, batch_size=batch_size, part_size=part_size, metadata=columns,
                          strict=strict, overwrite=overwrite, progress=progress, shard=parsed, dtype=dtype,
                          strategy=strategy)
    echo(result.summary())
    if result.rejected:
        echo(f"rejected files and reasons: {store_dir / shard_file(REJECTS_FILE, parsed)}")
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
    written = sum(info["part_rows"].values())
    echo(f"parts        {info['parts']} ({written} rows written, {info['bytes'] / 2**20:.1f} MiB)")
    echo(f"metadata     {', '.join(info['metadata_columns']) or 'none'}")
    echo(f"created      {info['created']} by hemoembed {info['hemoembed_version']} (format {info['format_version']})")


@store_group.command("convert")
@click.argument("store_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--dtype", type=click.Choice(["float16", "float32"]), required=True,
              help="How the copy keeps embeddings; float16 halves disk and memory.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder of the new store.")
@overwrite_option
def store_convert(store_dir: Path, dtype: str, out: Path, overwrite: bool) -> None:
    """Copy a store with its embeddings kept as another dtype (no images embedded again).

    The copy has the same encoder, rows, parts and metadata; float32 to float16 rounds each value as
    embed --dtype float16 does. Models fitted on either store apply to both.

    \b
    Example:
      hemoembed store convert stores/pbc64 --dtype float16 --out stores/pbc64_f16
    """
    from ..store.convert import convert_store, convertible

    convertible(store_dir, dtype)  # refused before the output folder is touched
    out = prepare_output_dir(out, overwrite, inputs=[store_dir])
    store = convert_store(store_dir, out, dtype, progress=progress)
    info = store.info()
    echo(f"store {out}: {info['rows']} rows as {dtype} ({info['bytes'] / 2**20:.1f} MiB), encoder "
         f"{store.fingerprint[:12]}")


@store_group.command("index")
@click.argument("store_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True)
@click.option("--cells", "nlist", type=POSITIVE, default=None,
              help="k-means cells (default: about the square root of the rows).")
@click.option("--recall", "target_recall", type=FiniteFloat(0.0, 1.0, min_open=True), default=0.95, show_default=True,
              help="Recall@10 against exact search that the number of cells searched per query is tuned to.")
@seed_option
def store_index(store_dir: Path, metric: str, nlist: int | None, target_recall: float, seed: int) -> None:
    """Build the approximate neighbour index of a store (faiss IVF, float16 rows) for neighbours --approximate.

    The index is saved in DIR/index/, records the recall@10 it reached against exact search and is refused
    once the store has new parts (rebuild it then).

    \b
    Example:
      hemoembed store index stores/big && hemoembed neighbours stores/big --path a/b.png --approximate
    """
    from ..progress import stage
    from ..store.index import NeighbourIndex
    from ..store.store import EmbeddingStore

    store = EmbeddingStore.open(store_dir)
    with stage(progress, len(store), "indexing") as advance:
        built = NeighbourIndex.build(store, metric=metric, nlist=nlist, target_recall=target_recall, seed=seed,
                                     progress=advance)
    info = built.info
    echo(f"{metric} index of {info.rows} rows in {store_dir / 'index'}: {info.nlist} cells, {info.nprobe} searched "
         f"per query, recall@{info.k} {info.recall:.3f} on {info.recall_queries} stored rows "
         f"({info.bytes / 2**20:.0f} MiB, {info.build_seconds:.0f} s)")


@main.command()
@click.argument("store_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--path", "stored_paths", multiple=True, help="A stored path (relative to the image root); repeatable.")
@click.option("--encoder", type=click.Path(path_type=Path), default=None,
              help="Encoder that built the store, to embed --image files.")
@click.option("--image", "images", type=click.Path(path_type=Path), multiple=True,
              help="An image file to query with (needs --encoder); repeatable.")
@click.option("-k", "k", type=POSITIVE, default=10, show_default=True, help="Neighbours per query.")
@click.option("--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the neighbours as CSV.")
@click.option("--gallery", type=click.Path(path_type=Path), default=None,
              help="Also draw each query and its neighbours (label = folder name, distance) as one PNG.")
@click.option("--image-root", type=click.Path(path_type=Path), default=None,
              help="Folder the stored paths are relative to (default: the one recorded by embed).")
@click.option("--approximate", is_flag=True,
              help="Use the store's approximate index (build it first: hemoembed store index DIR).")
@overwrite_option
def neighbours(store_dir: Path, stored_paths: tuple[str, ...], encoder: Path | None, images: tuple[Path, ...],
              k: int, metric: str, out: Path | None, overwrite: bool, gallery: Path | None = None,
              image_root: Path | None = None, approximate: bool = False) -> None:
    """Nearest stored images of stored paths or of new image files (exact, or --approximate).

    \b
    Examples:
      hemoembed neighbours stores/pbc64 --path PBC_dataset_normal_DIB/basophil/BA_100102.jpg -k 5
      hemoembed neighbours stores/pbc64 --encoder runs/pbc64/encoder.keras --image cell.jpg --out nn.csv
      hemoembed neighbours stores/big --path a/b.png --approximate
    """
    from ..config import atomic_write_text, csv_text
    from ..explain.neighbours import find_neighbours
    from ..store.store import EmbeddingStore

    for target, option in ((out, "--out"), (gallery, "--gallery")):  # both refused before any work
        if target is not None:
            prepare_output_file(target, overwrite, inputs=[store_dir, encoder, *images], option=option)
    store = EmbeddingStore.open(store_dir)
    found = find_neighbours(store, paths=stored_paths, encoder=encoder, images=images, k=k, metric=metric,
                            approximate=approximate)
    rows = found.rows(store)
    if out is not None:
        atomic_write_text(out, csv_text(rows))
        echo(f"{len(rows) - 1} neighbours of {len(found.queries)} queries written to {out}")
    else:
        for row in rows[1:]:
            echo("  ".join(row))
    if gallery is not None:
        from ..explain.gallery import gallery_for_store

        png = gallery_for_store(store, found.queries, found.indices, found.distances, gallery, image_root, metric,
                                overwrite)
        echo(f"gallery: {png}")


deprecated_command(main, neighbours, "neighbors")
