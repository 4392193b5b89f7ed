"""Supervised baseline: the same encoder with a softmax head, trained on the labels directly.

Stage 1 trains the head only (Adam 1e-3, 10 epochs); stage 2 unfreezes everything except BatchNorm
(Adam 1e-5, 20 epochs). With ``small_threshold`` (450) training images or fewer, stage 2 is skipped and
the head trains 30 epochs. Classes are weighted inversely to their frequency ("balanced"). The test
report is written by :mod:`hemoembed.tasks.common.reports`, so it compares line by line with ``fit-svm``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config import save_config
from ...data.manifest import Manifest
from ...data.preprocess import PreprocessingRecord
from ...errors import InputError

MODEL_FILE = "baseline.keras"


@dataclass
class BaselineConfig:
    """Settings of one ``hemoembed baseline`` run, saved as ``baseline_config.json``."""

    images: str = ""
    labels: str = ""
    column: str = "label"
    test: str = ""
    test_fraction: float = 0.1
    weights: str = "none"
    image_size: int = 224
    batch_size: int = 32
    head_epochs: int = 10
    head_lr: float = 1e-3
    finetune_epochs: int = 20
    finetune_lr: float = 1e-5
    small_threshold: int = 450
    small_head_epochs: int = 30
    n_bootstrap: int = 1000
    seed: int = 0
    stages: list[str] = field(default_factory=list)  # filled in by the run: what actually trained


def balanced_class_weights(labels: Sequence[int], n_classes: int) -> dict[int, float]:
    """scikit-learn's "balanced" weights: n_samples / (n_classes * count of the class)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=n_classes)
    if (counts == 0).any():
        raise InputError(f"class index {int(np.flatnonzero(counts == 0)[0])} has no training images")
    return {k: float(len(labels) / (n_classes * counts[k])) for k in range(n_classes)}


def schedule(n_train: int, config: BaselineConfig) -> list[tuple[str, int, float]]:
    """(stage, epochs, learning rate) to run: head then fine-tuning, or a longer head-only stage."""
    if n_train <= config.small_threshold:
        return [("head", config.small_head_epochs, config.head_lr)]
    return [("head", config.head_epochs, config.head_lr), ("finetune", config.finetune_epochs, config.finetune_lr)]


def build_classifier(record: PreprocessingRecord, n_classes: int, weights: str = "none"):
    """Encoder (as in pretraining) → Dense softmax head; returns (classifier, encoder)."""
    import keras

    from ...model.encoder import build_encoder

    encoder = build_encoder(record, weights=weights, freeze_bn=True)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="softmax_head", dtype="float32")(encoder.output)
    return keras.Model(encoder.input, outputs, name="hemoembed_baseline"), encoder


def _dataset(paths: Sequence[str], labels: np.ndarray, record: PreprocessingRecord, batch_size: int,
             shuffle_seed: int | None):
    """(image, label) batches through the project's one decoding/preprocessing path."""
    import tensorflow as tf

    from ...data.pipeline import inference_dataset

    table = tf.constant(np.asarray(labels, np.int64))
    ds = inference_dataset(list(paths), record, batch_size, shuffle_seed=shuffle_seed)
    return ds.map(lambda images, i: (images, tf.gather(table, i)))


def train_baseline(config: BaselineConfig, train: Manifest, train_labels: Sequence[str], test: Manifest,
                   test_labels: Sequence[str], out_dir: str | os.PathLike,
                   on_epoch: Callable[[str, int, dict], None] | None = None) -> dict[str, Any]:
    """Train the two-stage baseline, evaluate on ``test`` and write the shared report files."""
    import keras

    from ...model.encoder import set_batchnorm_trainable
    from ..common.labels import check_trainable
    from ..common.metrics import evaluate
    from ..common.reports import write_report

    out = Path(out_dir)
    check_trainable(train_labels, config.column)
    classes = sorted(set(map(str, train_labels)))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(v)] for v in train_labels])
    keras.utils.set_random_seed(config.seed)
    record = PreprocessingRecord(image_size=config.image_size)
    model, encoder = build_classifier(record, len(classes), config.weights)
    weights = balanced_class_weights(y, len(classes))
    data = _dataset(train.absolute(), y, record, config.batch_size, config.seed)
    history: dict[str, Any] = {}
    config.stages = []
    for stage, epochs, lr in schedule(len(y), config):
        encoder.trainable = stage == "finetune"
        set_batchnorm_trainable(model, False)  # BatchNorm stays frozen in both stages
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        callbacks = [keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs, s=stage: on_epoch(s, epoch, logs or {}))] if on_epoch else []
        fit = model.fit(data, epochs=epochs, class_weight=weights, verbose=0, callbacks=callbacks, shuffle=False)
        history[stage] = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
        config.stages.append(f"{stage}:{epochs}@{lr:g}")
    save_config(config, out / "baseline_config.json")
    model.save(out / MODEL_FILE)
    proba, kept = _predict(model, test.absolute(), record, config.batch_size)
    truth = [test_labels[i] for i in kept]
    report = evaluate(truth, proba, classes, column=config.column, seed=config.seed, n_bootstrap=config.n_bootstrap)
    report["model"] = {"kind": "supervised baseline", "n_train": len(y), "stages": config.stages,
                       "class_weights": {classes[k]: w for k, w in weights.items()}, "history": history,
                       "test_images_skipped": len(test) - len(kept)}
    write_report(report, out, truth, proba, subject="Supervised baseline: the encoder with a softmax head")
    return report


def _predict(model, paths: Sequence[str], record: PreprocessingRecord, batch_size: int) -> tuple[np.ndarray, list[int]]:
    from ...data.pipeline import inference_dataset

    probs, kept = [], []
    for images, idx in inference_dataset(list(paths), record, batch_size):
        probs.append(model(images, training=False).numpy())
        kept += idx.numpy().tolist()
    if not kept:
        raise InputError("no test image could be decoded")
    return np.concatenate(probs).astype(np.float64), kept
