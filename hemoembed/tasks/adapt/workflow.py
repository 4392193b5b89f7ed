"""``hemoembed adapt``: adapt on the shots, write the model, the adapted store and the reports (and, on
request, the study of :mod:`.study`).

The adapted encoder is written in one of two forms (``AdaptConfig.save_encoder``, ``--save-encoder``):

* ``reference`` (default for ``svm`` and ``head``): ``encoder.json``, a few hundred bytes that name the source
  encoder file (relative path and fingerprint) and the Reinhard statistics; every command that takes an
  encoder loads it and rebuilds the same model (:mod:`hemoembed.model.adapted`). In these modes the adapted
  encoder *is* the source encoder behind weightless colour layers, and the adapt folder already depends on
  its source run (whose encoder embeds the next site anyway), so a copy would only repeat its weights
  (24 MB for EfficientNetV2-B0) once per site and per rerun. A moved or retrained source is refused in one
  sentence, never used silently.
* ``copy``: ``encoder.keras``, self-contained: for handing the folder to someone without the source run.
  ``finetune`` always writes the copy: its weights are its own.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...config import atomic_write_text, csv_text, save_config
from ...errors import InputError
from ...progress import ProgressFactory
from ..common.metrics import evaluate
from ..common.reports import write_json, write_report
from ..common.sampling import select_shots
from .prepare import AdaptConfig, finetune_grid, prepare, support_subset
from .study import domain_separability, run_ablation, shot_curve, write_study

SAVE_ENCODER: tuple[str, ...] = ("reference", "copy")
MODE_WORDS = {"svm": "linear SVM on the source embedding", "head": "softmax head on the frozen encoder",
              "finetune": "fine-tuned encoder"}


def adapter_subject(config: AdaptConfig, n_shots: int) -> str:
    """Which model on which site, in words, for the report's figures."""
    colour = "after Reinhard to the source style" if config.colour_transform else "without colour transfer"
    return (f"Few-shot adapter: {MODE_WORDS.get(config.mode, config.mode)}, {n_shots} shots\n"
            f"on the new site {Path(config.target).name} ({colour})")


def run(config: AdaptConfig, out_dir: str | os.PathLike,
        progress: ProgressFactory | None = None) -> dict[str, Any]:
    """``hemoembed adapt``: shots.csv, the adapted encoder and target store, a ``predict``-ready SVM, the
    evaluation reports (and, with ``config.ablation``/``curve_shots``, the study); returns the report."""
    from ...store.embed import EmbedConfig, run_embed
    from ...store.store import EmbeddingStore
    from ..common.metrics import top_two

    out = Path(out_dir)
    if config.save_encoder not in SAVE_ENCODER:
        raise InputError(f"--save-encoder {config.save_encoder!r} is not one of {', '.join(SAVE_ENCODER)}")
    prep = prepare(config, progress)
    save_config(config, out / "adapt_config.json")
    labels, keys = np.asarray(prep.labels), prep.manifest.paths
    shots, test = select_shots(labels, config.shots, config.min_per_class, config.seed)
    atomic_write_text(out / "shots.csv", csv_text([["path", "label"]] + [[keys[i], labels[i]] for i in shots]))
    if prep.adapter.reference is not None:
        prep.adapter.reference.to_json(out / "colour_reference.json")
    support = support_subset(prep.support, config.source_support, config.seed) \
        if config.source_support and prep.support is not None else None
    if config.source_support and support is None:
        raise InputError("--source-support needs labelled --source-images")
    outcome = prep.adapter.run(config.mode, shots, test, colour=config.colour_transform, support=support,
                               grid=finetune_grid(config), folds=config.cv, smoothing=config.label_smoothing,
                               head_epochs=config.head_epochs, warm_head=config.warm_head, seed=config.seed)
    report = evaluate(labels[test], outcome.proba, outcome.classes, seed=config.seed, n_bootstrap=config.n_bootstrap)
    report["adapter"] = {**prep.notes, "mode": config.mode, "n_shots": len(shots), "n_test": len(test),
                         "shot_class_counts": {c: int((labels[shots] == c).sum()) for c in outcome.classes},
                         "cv": outcome.cv}
    write_report(report, out, labels[test], outcome.proba, subject=adapter_subject(config, len(shots)))
    first, second = top_two(outcome.proba, outcome.classes)
    top = outcome.proba.max(axis=1)
    atomic_write_text(out / "test_predictions.csv", csv_text(
        [["path", "true", "predicted", "probability", "second"]]
        + [[keys[i], labels[i], first[j], float(top[j]), second[j]] for j, i in enumerate(test)]))
    fp, encoder_file = save_adapted_encoder(outcome.encoder, config, prep.notes["source_encoder"], out)
    report["adapter"]["encoder_file"] = encoder_file.name
    store = EmbeddingStore.create(out / "store", fp, prep.record, int(outcome.encoder.output_shape[-1]))
    run_embed(outcome.encoder, prep.record, store, prep.manifest, batch_size=config.embed_batch_size,
              config=EmbedConfig(encoder=str(encoder_file), images=prep.manifest.source,
                                 image_root=str(prep.manifest.root), batch_size=config.embed_batch_size))
    svm = outcome.svm
    if svm is None:  # head / finetune: an SVM on the adapted embeddings of the shots, so `predict` works
        from ..svm.estimator import EmbeddingSVM

        row = {p: i for i, p in enumerate(store.paths)}
        X = store.embeddings()[[row[keys[i]] for i in shots]]
        svm = EmbeddingSVM(random_state=config.seed).fit(X, labels[shots])
        report["adapter"]["predict_model"] = "svm on the adapted embeddings (the head is in classifier.keras)"
        outcome.classifier.save(out / "classifier.keras")
    svm.save(out, fingerprint=fp, column="label", extra={"adapter_mode": config.mode, "n_train": len(shots)})
    write_json(out / "report.json", report)
    if config.ablation and prep.support is not None:
        report["adapter"]["domain_separability"] = domain_separability(prep, config.seed)
        write_json(out / "report.json", report)
    if config.ablation or config.curve_shots:
        write_study(out, run_ablation(prep, config, progress) if config.ablation else None,
                    shot_curve(prep, config, progress) if config.curve_shots else None,
                    subject=f"new site {Path(config.target).name}, source run {Path(config.source).name}")
    return report


def save_adapted_encoder(encoder, config: AdaptConfig, source: str | os.PathLike,
                         out: Path) -> tuple[str, Path]:
    """Write the adapted encoder as ``encoder.json`` (a reference to the encoder file ``source``) or
    ``encoder.keras`` (a copy; always for ``finetune``); see the module docstring. Returns ``(fingerprint,
    the file written)``."""
    from ...model.adapted import save_encoder_reference
    from ...model.encoder import save_encoder

    if config.mode == "finetune" or config.save_encoder == "copy":
        return save_encoder(encoder, out / "encoder.keras"), out / "encoder.keras"
    return save_encoder_reference(encoder, source, out / "encoder.json"), out / "encoder.json"
