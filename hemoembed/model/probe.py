"""A probe that watches pretraining: is the embedding learning, and has it collapsed?

Every few epochs the encoder embeds a small labelled set (``--probe-labels``; never a test set) and the
probe reports, by stratified cross-validation on that set:

* ``probe_knn_f1``: macro-F1 of a cosine k-nearest-neighbour vote (k = 20, or fewer for tiny sets);
* ``probe_linear_f1``: macro-F1 of a standardised logistic regression (the usual linear probe);
* ``embedding_std``: the mean per-dimension standard deviation of the L2-normalised embeddings times
  √d. Unit vectors spread evenly over the sphere give ≈ 1; a collapsed encoder (every image mapped to
  nearly the same point, as in the semi-hard demo run of issue 16) gives ≈ 0. Computed without labels,
  so it is reported on the validation images when no probe set is given.

The images are decoded and preprocessed once (the same path as ``embed``) and held in memory as uint8.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.preprocess import PreprocessingRecord
from ..errors import InputError

PROBE_COLUMNS = ("probe_knn_f1", "probe_linear_f1", "embedding_std")
MAX_UNLABELLED = 512  # validation images used for embedding_std when there is no probe set


def embedding_spread(embeddings: np.ndarray) -> float:
    """Mean per-dimension std of the row-normalised embeddings × √d (≈ 1 spread out, ≈ 0 collapsed)."""
    x = np.asarray(embeddings, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return float(x.std(axis=0).mean() * math.sqrt(x.shape[1])) if len(x) > 1 else float("nan")


def probe_scores(embeddings: np.ndarray, labels: Sequence[str], folds: int = 5, k: int = 20,
                 seed: int = 0) -> dict[str, float]:
    """Cross-validated k-NN and linear-probe macro-F1 of ``embeddings`` for ``labels``, plus the spread."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(embeddings, np.float32)
    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    folds = int(min(folds, counts.min()))
    if len(classes) < 2 or folds < 2:
        raise InputError("probe labels: need at least two classes with two images each")
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    knn_pred, lin_pred = np.empty_like(y), np.empty_like(y)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        knn_pred[test] = _knn_vote(unit[train], y[train], unit[test], min(k, len(train)))
        linear = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))
        lin_pred[test] = linear.fit(x[train], y[train]).predict(x[test])
    return {"probe_knn_f1": float(f1_score(y, knn_pred, average="macro")),
            "probe_linear_f1": float(f1_score(y, lin_pred, average="macro")),
            "embedding_std": embedding_spread(x)}


def _knn_vote(train: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Similarity-weighted vote of the k most cosine-similar training rows (unit vectors in, labels out)."""
    sim = query @ train.T
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    classes = np.unique(labels)
    index = np.searchsorted(classes, labels[top])
    votes = np.zeros((len(query), len(classes)))
    np.add.at(votes, (np.arange(len(query))[:, None], index), np.exp(sim[np.arange(len(query))[:, None], top] / 0.1))
    return classes[votes.argmax(axis=1)]


@dataclass
class TrainingProbe:
    """Preprocessed probe images (uint8, in memory) and their labels; ``None`` labels: spread only."""

    images: np.ndarray
    labels: list[str] | None
    seed: int = 0

    @classmethod
    def from_paths(cls, paths: Sequence[str], labels: Sequence[str] | None, record: PreprocessingRecord,
                   seed: int = 0) -> TrainingProbe:
        """Decode and preprocess ``paths`` once; unreadable images are dropped with their labels."""
        from ..data.pipeline import inference_dataset

        chunks, kept = [], []
        for images, indices in inference_dataset(list(paths), record, batch_size=128):
            chunks.append(np.round(images.numpy()).astype(np.uint8))
            kept.extend(indices.numpy().tolist())
        if not chunks:
            raise InputError("probe: none of the probe images could be read")
        kept_labels = [labels[i] for i in kept] if labels is not None else None
        return cls(np.concatenate(chunks), kept_labels, seed)

    def embed(self, model: Any, batch_size: int = 256) -> np.ndarray:
        """The model's embeddings of the probe images (inference mode)."""
        out = [np.asarray(model(self.images[i:i + batch_size].astype(np.float32), training=False))
               for i in range(0, len(self.images), batch_size)]
        return np.concatenate(out)

    def __call__(self, model: Any) -> dict[str, float]:
        """The probe's row for the history: k-NN and linear macro-F1 (NaN without labels) and the spread."""
        embeddings = self.embed(model)
        if self.labels is None:
            return {"probe_knn_f1": math.nan, "probe_linear_f1": math.nan,
                    "embedding_std": embedding_spread(embeddings)}
        return probe_scores(embeddings, self.labels, seed=self.seed)
