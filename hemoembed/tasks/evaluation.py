"""Shared evaluation of a classifier's test predictions: one report format for every downstream task.

Everything is computed from the confusion matrix (point estimates and a seeded bootstrap over test
images), so the SVM, active learning, the adapter and the supervised baseline compare line by line.
The prediction is always the argmax of the probabilities, which keeps confusion matrix, per-class
counts and precision-recall curves consistent with each other.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import atomic_write_text, csv_text
from ..errors import InputError
from ..plotting import pyplot, save_figure

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
    }


def per_class_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    """``per_class.csv`` rows (header first) of one report."""
    rows: list[list[Any]] = [["column", "class", "support", "predicted", "precision", "recall", "f1",
                              "f1_ci_low", "f1_ci_high", "average_precision"]]
    for r in report["per_class"]:
        rows.append([report["column"], r["class"], r["support"], r["predicted"], _r(r["precision"]),
                     _r(r["recall"]), _r(r["f1"]), _r(r["f1_ci"][0]), _r(r["f1_ci"][1]),
                     _r(r["average_precision"])])
    return rows


def _r(value: float) -> float:
    return round(float(value), 6)


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON through an atomic write (NaN written as null)."""
    atomic_write_text(Path(path), json.dumps(_nan_to_none(data), indent=2) + "\n")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike, y_true: Sequence[str] | None = None,
                 proba: np.ndarray | None = None) -> list[Path]:
    """Write ``report.json``, ``per_class.csv``, ``confusion.png`` and (with scores) ``pr_curves.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    atomic_write_text(out / "per_class.csv", csv_text(per_class_rows(report)))
    written = [out / "report.json", out / "per_class.csv", out / "confusion.png"]
    save_figure(_confusion_figure(report), out / "confusion.png")
    if y_true is not None and proba is not None:
        save_figure(_pr_figure(report, y_true, proba), out / "pr_curves.png")
        written.append(out / "pr_curves.png")
    return written


def _confusion_figure(report: Mapping[str, Any]):
    plt = pyplot()
    cm = np.asarray(report["confusion_matrix"])
    classes = report["classes"]
    size = 2.5 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{report['column']}: macro-F1 {report['macro']['f1']:.3f}", fontsize=9)
    return fig


def _pr_figure(report: Mapping[str, Any], y_true: Sequence[str], proba: np.ndarray):
    from sklearn.metrics import precision_recall_curve

    plt = pyplot()
    classes = report["classes"]
    truth = encode_labels(y_true, classes, f"column {report['column']!r}")
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, row in enumerate(report["per_class"]):
        if row["support"] == 0:
            continue
        precision, recall, _ = precision_recall_curve(truth == i, np.asarray(proba)[:, i])
        ax.plot(recall, precision, lw=1.2, label=f"{row['class']} (AP {row['average_precision']:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=6, loc="lower left")
    ax.set_title(f"{report['column']}: precision-recall", fontsize=9)
    return fig


def summarize(reports: Mapping[str, Mapping[str, Any]], main_column: str = "label") -> dict[str, Any]:
    """Summary across columns: one row per column and the mean F1 over the attribute columns.

    Attribute columns are all columns except ``main_column`` (the cell type in WBCAtt).
    """
    rows = [{"column": col, "n_classes": len(r["classes"]), "n_test": r["n_test"], "accuracy": r["accuracy"],
             "macro_f1": r["macro"]["f1"], "macro_f1_ci_low": r["bootstrap"]["macro_f1_ci"][0],
             "macro_f1_ci_high": r["bootstrap"]["macro_f1_ci"][1],
             "mean_average_precision": r["mean_average_precision"]} for col, r in reports.items()]
    attributes = [row["macro_f1"] for row in rows if row["column"] != main_column]
    return {"columns": rows, "mean_attribute_macro_f1": float(np.mean(attributes)) if attributes else None,
            "n_attribute_columns": len(attributes)}


def write_summary(summary: Mapping[str, Any], out_dir: str | os.PathLike) -> None:
    """``summary.json`` and ``summary.csv`` (one row per column)."""
    out = Path(out_dir)
    write_json(out / "summary.json", summary)
    keys = ["column", "n_classes", "n_test", "accuracy", "macro_f1", "macro_f1_ci_low", "macro_f1_ci_high",
            "mean_average_precision"]
    rows: list[list[Any]] = [keys]
    rows += [[row[k] if isinstance(row[k], (str, int)) else _r(row[k]) for k in keys] for row in summary["columns"]]
    atomic_write_text(out / "summary.csv", csv_text(rows))
