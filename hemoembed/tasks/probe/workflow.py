"""``hemoembed probe``: an encoder's embedding of labelled images beside raw pixels, an untrained encoder of the
same architecture and chance, each scored by the same linear SVM on the same held-out splits."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...progress import ProgressFactory, stage
from .compare import linear_probe

ENCODER, RANDOM, PIXELS, CHANCE = "encoder", "random encoder", "raw pixels", "chance"


@dataclass
class ProbeConfig:
    """Settings of one ``hemoembed probe`` run, saved as ``probe_config.json`` next to its outputs."""

    encoder: str = ""
    images: str = ""
    image_root: str = ""
    labels: str = ""  # labels CSV joined on path; empty: the manifest's (or folders') label column
    column: str = "label"
    repeats: int = 5
    test_fraction: float = 0.25
    pixel_side: int = 32  # raw pixels: the encoder's colour normalisation and crop, this side, flattened
    seed: int = 0


def raw_pixels(paths: list[str], record, side: int) -> np.ndarray:
    """The images as the encoder would see them (colour normalisation, central crop) at ``side`` px,
    flattened to [0, 1] rows: what a linear classifier gets without any encoder."""
    import dataclasses

    from ...data.preprocess import load_inputs

    small = dataclasses.replace(record, image_size=side)
    return load_inputs(paths, small).reshape(len(paths), -1) / 255.0


def run(config: ProbeConfig, out: str | os.PathLike | None = None, *, manifest: Any = None,
        progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Score the encoder, a random encoder (same architecture and preprocessing, seeded), raw pixels and
    chance; with ``out`` write ``probe.json`` and ``probe_config.json``. Returns the summary. ``manifest``:
    the images already loaded (else ``config.images``)."""
    from ...config import save_config
    from ...data.manifest import load_manifest
    from ...model.options import encoder_file
    from ..common.labels import manifest_labels
    from ..common.reports import write_json

    encoder_file(config.encoder)
    manifest = manifest if manifest is not None else load_manifest(config.images, config.image_root or None)
    labels = np.asarray(manifest_labels(manifest, config.labels or None, config.column))
    keep = np.flatnonzero(labels != "")
    if len(keep) == 0:
        raise InputError(f"{config.labels or config.images}: no image has a {config.column!r} label")
    paths = [manifest.absolute()[i] for i in keep]
    import keras  # TensorFlow: only once the encoder file, images and labels are known to be there

    from ...model.encoder import build_encoder, fingerprint, load_encoder, view_average_of
    from ...store.embed import embed_images

    model, record = load_encoder(config.encoder)
    keras.utils.set_random_seed(config.seed)
    untrained = build_encoder(record, "none", view_average=view_average_of(model))  # the same shape, inference
    representations = {}
    with stage(progress, 2 * len(paths), "embedding") as advance:
        for name, encoder in ((ENCODER, model), (RANDOM, untrained)):
            X, ok = embed_images(encoder, record, paths, progress=advance)
            if len(ok) != len(paths):
                bad = paths[sorted(set(range(len(paths))) - set(ok.tolist()))[0]]
                raise InputError(f"{bad}: cannot be embedded (check the images with hemoembed check)")
            representations[name] = X
    representations[PIXELS] = raw_pixels(paths, record, config.pixel_side)
    scores = linear_probe(representations, labels[keep], repeats=config.repeats,
                          test_fraction=config.test_fraction, seed=config.seed)
    summary = {"n_images": len(paths), "classes": sorted(set(labels[keep].tolist())),
               "encoder_fingerprint": fingerprint(model), "scores": scores}
    if out is not None:
        save_config(config, Path(out) / "probe_config.json")
        write_json(Path(out) / "probe.json", summary)
    return summary


def verdict(summary: dict[str, Any], metric: str = "accuracy") -> str:
    """One sentence: does the encoder beat raw pixels and a random encoder, by how much?"""
    s = summary["scores"]
    mine = s[ENCODER][f"{metric}_mean"]
    gains = {name: mine - s[name][f"{metric}_mean"] for name in (PIXELS, RANDOM)}
    beaten = [name for name, gain in gains.items() if gain > 0]
    text = ", ".join(f"{gain:+.3f} vs {name}" for name, gain in gains.items())
    if len(beaten) == 2:
        return f"the embedding beats both baselines ({metric} {text}): it has learned something a linear SVM can use"
    if not beaten:
        return f"the embedding does NOT beat its baselines ({metric} {text}): train longer or check the recipe"
    return f"the embedding beats only the {beaten[0]} ({metric} {text})"
