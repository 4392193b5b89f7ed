"""Entry points with plain arguments, for a notebook: what the library takes as typed configs, taken here
as keyword options (see the README's "Python API")."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def pretrain(images: Any, out: str | os.PathLike, *, config: Any = None, resume: bool = False,
             progress: Any = None, log: Callable[[str], None] = print, **options: Any):
    """Pretrain the triplet encoder on ``images`` (a manifest, folder or CSV) into the run folder ``out``.

    ``options`` are :class:`~hemoembed.model.pretrain.PretrainConfig` settings (``weights``, ``epochs``,
    ``image_size``, ``batch_size``, ...), applied over ``config`` and the preset. Returns the run's
    :class:`~hemoembed.model.pretrain.PretrainResult` (``.out`` the run folder, ``.encoder`` its encoder)."""
    from .data.manifest import Manifest, load_manifest
    from .model.pretrain import pretrain as run_pretrain
    from .model.pretrain import resolve_config

    manifest = images if isinstance(images, Manifest) else load_manifest(images)
    settings = resolve_config(config, **options)
    return run_pretrain(manifest, out, settings, resume=resume, progress=progress, log=log)
