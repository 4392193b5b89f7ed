"""``hemoembed baseline``: join the labels to the images, split off the test images, train and report."""
from __future__ import annotations

import os
from typing import Any

from ...data.manifest import Manifest
from ...progress import ProgressFactory, stage
from ..common.labels import manifest_labels
from .model import BaselineConfig, schedule, train_baseline


def split(config: BaselineConfig, manifest: Manifest) -> tuple[Manifest, Manifest]:
    """(train, test) manifests with ``config.column`` holding each image's label: labels joined from
    ``config.labels`` (unlabelled images dropped) or the images' own; the test images are those of
    ``config.test`` (left out of training) or a stratified ``config.test_fraction``."""
    from ...data.manifest import read_manifest_csv
    from ..common.splits import stratified_test_split

    column = config.column
    values = manifest_labels(manifest, config.labels, column)  # unlabelled images (and NaN markers) dropped
    keep = [i for i, v in enumerate(values) if v]
    manifest = manifest.subset(keep)
    manifest.columns[column] = [values[i] for i in keep]
    if config.test:
        test = read_manifest_csv(config.test, manifest.root)
        held = set(test.paths)
        return manifest.subset([i for i, p in enumerate(manifest.paths) if p not in held]), test
    train_idx, test_idx = stratified_test_split(manifest.column(column), config.test_fraction, seed=config.seed)
    return manifest.subset(train_idx), manifest.subset(test_idx)


def run(config: BaselineConfig, out: str | os.PathLike, *, manifest: Manifest | None = None,
        progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Train the baseline on ``manifest`` (default: ``config.images``) into ``out``; returns the test report
    (``report["model"]["n_train"]``: training images)."""
    from ...data.manifest import load_manifest

    manifest = manifest if manifest is not None else load_manifest(config.images)
    train, test = split(config, manifest)
    total = sum(epochs for _, epochs, _ in schedule(len(train), config))
    with stage(progress, total, "training") as advance:
        return train_baseline(config, train, train.column(config.column), test, test.column(config.column), out,
                              on_epoch=lambda stage_name, epoch, logs: advance(1))
