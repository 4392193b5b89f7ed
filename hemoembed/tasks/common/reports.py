"""Report files of a classifier's test predictions: one format (JSON, CSV, PNG) for every downstream task."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...config import atomic_write_text, csv_text
from ...plotting import pyplot, save_figure
from .metrics import encode_labels, neg_log_error


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
    """Pretty JSON through an atomic write (NaN and infinities written as null: valid JSON)."""
    atomic_write_text(Path(path), json.dumps(json_safe(data), indent=2) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists, tuples) replaced by ``None``."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
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


# Candidate tick labels of the F1 axis, dense enough that any span of the data gets a few.
_F1_TICKS = np.unique(np.round(np.concatenate([np.arange(0.0, 0.9, 0.05), np.arange(0.9, 0.99, 0.01),
                                               [0.99, 0.995, 0.998, 0.999]]), 3))


def f1_axis(ax, f1: Sequence[float] | np.ndarray, label: str = "macro-F1", max_ticks: int = 7) -> None:
    """Put F1 values on the paper's axis −log(1 − F1) (plot ``neg_log_error(f1)``): the y range spans the
    data (not 0–0.999) and the ticks are labelled in F1, at most ``max_ticks`` of them."""
    values = neg_log_error(np.asarray([v for v in np.ravel(f1) if np.isfinite(v)] or [0.0, 0.9]))
    low, high = float(values.min()), float(values.max())
    pad = max(0.06 * (high - low), 0.05)
    low, high = max(low - pad, 0.0), high + pad
    ticks = [t for t in _F1_TICKS if low <= neg_log_error(t) <= high]
    spacing, kept = (high - low) / max_ticks, []
    for t in ticks:  # thin out ticks that would sit closer than a max_ticks-th of the axis
        if not kept or neg_log_error(t) - neg_log_error(kept[-1]) >= spacing:
            kept.append(t)
    ax.set_ylim(low, high)
    ax.set_yticks(neg_log_error(np.asarray(kept)), [f"{t:g}" for t in kept])
    ax.set_ylabel(f"{label} (axis −log(1−F1))")
    ax.grid(axis="y", alpha=0.3)
