"""Building a store from Python: an encoder (file or model) and images (manifest, folder or CSV) in, the
opened store out. :func:`embed` is ``hemoembed embed`` with plain arguments; the guarantees (options
checked first, the folder locked, nothing half-made left behind) are :func:`~.embed.embed_to_store`'s."""
from __future__ import annotations

import os
from typing import Any

from ..data.manifest import Manifest
from ..progress import ProgressFactory
from .embed import EmbedConfig, EmbedResult, default_metadata_columns, embed_to_store
from .store import EmbeddingStore


def embed(encoder: str | os.PathLike | Any, images: Manifest | str | os.PathLike, store: str | os.PathLike,
          **options: Any) -> EmbeddingStore:
    """Embed ``images`` with ``encoder`` into the store folder ``store``: created, or appended to when the
    same encoder built it. Returns the opened store; ``options`` are those of :func:`build`."""
    return build(encoder, images, store, **options)[0]


def build(encoder: str | os.PathLike | Any, images: Manifest | str | os.PathLike, store: str | os.PathLike, *,
          image_root: str | os.PathLike | None = None, batch_size: int = 64, part_size: int = 2048,
          metadata: list[str] | None = None, strict: bool = False, overwrite: bool = False,
          progress: ProgressFactory | None = None, shard: str | tuple[int, int] | None = None,
          dtype: str | None = None, strategy: str = "one") -> tuple[EmbeddingStore, EmbedResult]:
    """:func:`embed`, also returning what the run did (embedded, already present, rejected files with
    reasons). ``metadata``: manifest columns to store (default: every column but ``label``); ``shard``:
    ``"I/N"``, this writer's share of the images (other shards may write to the store at the same time);
    ``dtype``: ``float16`` or ``float32`` storage for a new store; ``strategy``: ``one`` device,
    ``mirrored`` (every local GPU, or every logical CPU) or ``auto``."""
    from ..data.manifest import load_manifest
    from .embed import check_embed_target, parse_shard

    shard = parse_shard(shard) if isinstance(shard, str) else shard

    manifest = images if isinstance(images, Manifest) else load_manifest(images, image_root)
    check_embed_target(manifest, store, overwrite=overwrite, batch_size=batch_size, part_size=part_size,
                       metadata=metadata, shard=shard, dtype=dtype)  # before the encoder loads: errors at once
    from ..model.distribute import make_strategy
    from ..model.encoder import load_encoder

    model, name = (load_encoder(encoder)[0], str(encoder)) if isinstance(encoder, (str, os.PathLike)) else (encoder, "")
    columns = default_metadata_columns(manifest) if metadata is None else list(metadata)
    distribute = make_strategy(strategy) if strategy != "one" else None
    config = EmbedConfig(encoder=name, images=manifest.source, image_root=str(manifest.root), batch_size=batch_size,
                         part_size=part_size, strict=strict, metadata_columns=columns,
                         shard=f"{shard[0]}/{shard[1]}" if shard else "", strategy=strategy, dtype=dtype or "")
    return embed_to_store(model, manifest, store, overwrite=overwrite, batch_size=batch_size, part_size=part_size,
                          strict=strict, metadata=columns, config=config, progress=progress, shard=shard,
                          dtype=dtype, strategy=distribute)
