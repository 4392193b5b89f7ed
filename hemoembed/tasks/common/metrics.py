"""Shared evaluation of a classifier's test predictions: the same scores for every downstream task.

Everything is computed from the confusion matrix (point estimates and a seeded bootstrap over test
images), so the SVM, active learning, the adapter and the supervised baseline compare line by line.
The prediction is always the argmax of the probabilities, which keeps confusion matrix, per-class
counts and precision-recall curves consistent with each other.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InputError

N_BOOTSTRAP = 1000


def encode_labels(values: Sequence[str], classes: Sequence[str], where: str) -> np.ndarray:
    """Map string labels to indices of ``classes``; an unknown label names itself and ``where``."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise InputError(f"{where}: label(s) {', '.join(map(repr, unknown[:5]))} not among the model's "
                         f"classes ({', '.join(classes)})")
    return np.array([index[str(v)] for v in values], dtype=np.int64)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) of integer labels."""
    codes = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(codes, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (0 where undefined) and accuracy; works on stacks (..., K, K)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    predicted, support = cm.sum(axis=-2), cm.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
        accuracy = tp.sum(axis=-1) / cm.sum(axis=(-2, -1))
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}


def bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, *, seed: int = 0,
                        n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Seeded percentile 95% intervals for accuracy, macro-F1 and per-class F1 (test images resampled)."""
    rng = np.random.default_rng(seed)
    codes = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    n = len(codes)
    cms = np.empty((n_bootstrap, n_classes, n_classes), dtype=np.int64)
    for b in range(n_bootstrap):
        sample = codes[rng.integers(0, n, n)]
        cms[b] = np.bincount(sample, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    scores = scores_from_confusion(cms)

    def ci(values: np.ndarray) -> list[float]:
        return [float(v) for v in np.percentile(values, [2.5, 97.5], axis=0)]

    per_class = np.percentile(scores["f1"], [2.5, 97.5], axis=0).T
    return {"n": n_bootstrap, "seed": seed, "accuracy_ci": ci(scores["accuracy"]),
            "macro_f1_ci": ci(scores["f1"].mean(axis=-1)), "per_class_f1_ci": per_class.tolist()}


def chance(labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of guessing at random in the class proportions: Σp² and 1/K (every class's
    precision and recall are its own share). The floor every score is read against."""
    _, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    share = counts / max(counts.sum(), 1)
    return {"accuracy": float(np.sum(share ** 2)), "macro_f1": float(np.mean(share)) if len(share) else 0.0}


def evaluate(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str], *, column: str = "label",
             seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Full test report for one label column from true labels and class probabilities (N, K).

    Macro averages are over all of ``classes`` (the classes the model was trained on).
    """
    from sklearn.metrics import average_precision_score

    classes = [str(c) for c in classes]
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
        raise InputError(f"column {column!r}: probabilities of shape {proba.shape} do not match "
                         f"{len(y_true)} test labels and {len(classes)} classes")
    if len(y_true) == 0:
        raise InputError(f"column {column!r}: no test images to evaluate")
    k = len(classes)
    truth = encode_labels(y_true, classes, f"column {column!r} test set")
    pred = proba.argmax(axis=1)
    cm = confusion(truth, pred, k)
    scores = scores_from_confusion(cm)
    ap = [float(average_precision_score(truth == i, proba[:, i])) if (truth == i).any() else float("nan")
          for i in range(k)]
    boot = bootstrap_intervals(truth, pred, k, seed=seed, n_bootstrap=n_bootstrap)
    per_class_ci = boot.pop("per_class_f1_ci")
    per_class = [{"class": c, "support": int(cm[i].sum()), "predicted": int(cm[:, i].sum()),
                  "precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                  "f1": float(scores["f1"][i]), "f1_ci": [float(v) for v in per_class_ci[i]],
                  "average_precision": ap[i]} for i, c in enumerate(classes)]
    valid_ap = [a for a in ap if not np.isnan(a)]
    return {
        "column": column, "n_test": len(truth), "classes": classes,
        "accuracy": float(scores["accuracy"]),
        "macro": {"precision": float(scores["precision"].mean()), "recall": float(scores["recall"].mean()),
                  "f1": float(scores["f1"].mean())},
        "mean_average_precision": float(np.mean(valid_ap)) if valid_ap else float("nan"),
        "per_class": per_class, "confusion_matrix": cm.tolist(), "bootstrap": boot,
        "chance": chance(np.asarray(classes)[truth]),
    }


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> float:
    """Macro-F1 over ``classes`` (the same computation as the full report)."""
    where = "macro-F1"
    cm = confusion(encode_labels(y_true, classes, where), encode_labels(y_pred, classes, where), len(classes))
    return float(scores_from_confusion(cm)["f1"].mean())


def neg_log_error(f1: np.ndarray | float) -> np.ndarray:
    """The paper's learning-curve axis: −log(1 − F1), which spreads out scores near 1."""
    return -np.log(np.clip(1.0 - np.asarray(f1, dtype=np.float64), 1e-6, None))


def top_two(proba: np.ndarray, classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Most and second-most likely class per row (ties broken by class order, like argmax)."""
    order = np.argsort(-np.asarray(proba), axis=1, kind="stable")
    names = np.asarray(classes)
    second = names[order[:, 1]] if proba.shape[1] > 1 else names[order[:, 0]]
    return names[order[:, 0]].tolist(), second.tolist()
