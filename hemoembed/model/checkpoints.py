"""A pretraining run's checkpoints: which one to resume from, and encoders written from them.

``checkpoints/checkpoint.json`` names the last completed epoch's ``.npz`` (see :mod:`.pretrain`); an
encoder is always exported as a float32 copy without mixed-precision or synchronised-BN settings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from .pretrain_config import PretrainConfig, load_run_config


def checkpoint_pointer(ckpt_dir: Path) -> dict:
    """``checkpoint.json``: ``{}`` before the first epoch ended; its ``file`` is null once a finished run
    dropped its checkpoints (--keep-checkpoints 0)."""
    import json

    pointer = ckpt_dir / "checkpoint.json"
    return json.loads(pointer.read_text()) if pointer.is_file() else {}


def last_checkpoint(ckpt_dir: Path) -> str | None:
    """The checkpoint file to resume from; ``None`` when there is none (not yet written, or dropped)."""
    return checkpoint_pointer(ckpt_dir).get("file")


def export_checkpoint(run: str | Path, epoch: int, path: str | Path) -> str:
    """Write the encoder of an earlier epoch of ``run`` (a checkpoint kept with ``--keep-checkpoints``) to
    ``path``; returns its fingerprint. For looking back along a run: how the embedding changed with epochs."""
    from .distribute import make_strategy
    from .pretrain import make_trainer  # the run's own trainer (pretrain imports this module)
    from .training import load_checkpoint

    run = Path(run)
    checkpoint = run / "checkpoints" / f"epoch-{epoch:04d}.npz"
    if not checkpoint.is_file():
        kept = ", ".join(str(int(p.stem.split("-")[1])) for p in sorted(checkpoint.parent.glob("epoch-*.npz")))
        raise InputError(f"{run}: no checkpoint of epoch {epoch} (kept: {kept or 'none'}; keep more with "
                         "--keep-checkpoints)")
    config = load_run_config(run)
    trainer = make_trainer(config, make_strategy("one"), 1)
    trainer.restore(load_checkpoint(checkpoint)[0], str(checkpoint))
    return export_encoder(config, trainer.model, Path(path))


def export_encoder(config: PretrainConfig, model: Any, path: Path) -> str:
    """Save a float32 copy of the trained encoder (no mixed-precision or synchronised-BN settings), averaging
    its images' dihedral views when the run's ``view_average`` says so."""
    from .encoder import build_encoder, save_encoder

    clean = build_encoder(config.record, "none", config.dropout, config.freeze_bn, drop_path=config.drop_path,
                          view_average=config.view_average)
    clean.set_weights(model.get_weights())
    return save_encoder(clean, path)
