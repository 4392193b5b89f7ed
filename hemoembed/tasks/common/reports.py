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
                 proba: np.ndarray | None = None, subject: str = "") -> list[Path]:
    """Write ``report.json``, ``per_class.csv``, ``confusion.png`` and (with scores) ``pr_curves.png``.

    ``subject`` says in words which model on which images the figures show (e.g. "linear SVM on the
    embedding", "adapter (svm) on site1"); it heads both figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    atomic_write_text(out / "per_class.csv", csv_text(per_class_rows(report)))
    written = [out / "report.json", out / "per_class.csv", out / "confusion.png"]
    save_figure(confusion_figure(report, subject), out / "confusion.png")
    if y_true is not None and proba is not None:
        save_figure(pr_figure(report, y_true, proba, subject), out / "pr_curves.png")
        written.append(out / "pr_curves.png")
    return written


def _heading(report: Mapping[str, Any], subject: str, what: str) -> str:
    column = f"{what} of '{report['column']}'" if report.get("column") else what
    return f"{subject}\n{column}" if subject else column


def confusion_figure(report: Mapping[str, Any], subject: str = ""):
    """Counts on a colour scale of the share of each true class (so small classes read as well as large
    ones); numbers are white on dark cells and black on light ones."""
    plt = pyplot()
    cm = np.asarray(report["confusion_matrix"])
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    classes = report["classes"]
    n = len(classes)
    side = float(np.clip(2.8 + 0.55 * n, 4.2, 11.0))
    font = float(np.clip(13 - 0.35 * n, 7, 11))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=font,
                color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(n), classes, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center",
                  fontsize=font)
    ax.set_yticks(range(n), classes, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class")
    ax.set_title(f"{_heading(report, subject, 'confusion matrix')}\nmacro-F1 {report['macro']['f1']:.3f}, "
                 f"accuracy {report['accuracy']:.3f} on {int(cm.sum())} test images", fontsize=10)
    fig.tight_layout()
    return fig


def pr_figure(report: Mapping[str, Any], y_true: Sequence[str], proba: np.ndarray, subject: str = ""):
    """One precision-recall curve per class, with its average precision."""
    from sklearn.metrics import precision_recall_curve

    plt = pyplot()
    classes = report["classes"]
    truth = encode_labels(y_true, classes, f"column {report['column']!r}")
    fig, ax = plt.subplots(figsize=(6, 4.6))
    palette = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20").colors
    for i, row in enumerate(report["per_class"]):
        if row["support"] == 0:
            continue
        precision, recall, _ = precision_recall_curve(truth == i, np.asarray(proba)[:, i])
        ax.plot(recall, precision, lw=1.4, color=palette[i % len(palette)],
                label=f"{row['class']} (AP {row['average_precision']:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(_heading(report, subject, "precision-recall per class"), fontsize=10)
    fig.tight_layout()
    return fig


def summarize(reports: Mapping[str, Mapping[str, Any]], main_column: str = "label") -> dict[str, Any]:
    """Summary across columns: one row per column and the mean F1 over the attribute columns.

    Attribute columns are all columns except ``main_column`` (the cell type in WBCAtt).
    """
    rows = [{"column": col, "n_classes": len(r["classes"]), "n_test": r["n_test"], "accuracy": r["accuracy"],
             "macro_f1": r["macro"]["f1"], "macro_f1_ci_low": r["bootstrap"]["macro_f1_ci"][0],
             "macro_f1_ci_high": r["bootstrap"]["macro_f1_ci"][1],
             "mean_average_precision": r["mean_average_precision"],
             "chance_macro_f1": r.get("chance", {}).get("macro_f1", float("nan")),
             "chance_accuracy": r.get("chance", {}).get("accuracy", float("nan"))} for col, r in reports.items()]
    attributes = [row["macro_f1"] for row in rows if row["column"] != main_column]
    return {"columns": rows, "mean_attribute_macro_f1": float(np.mean(attributes)) if attributes else None,
            "n_attribute_columns": len(attributes)}


def write_summary(summary: Mapping[str, Any], out_dir: str | os.PathLike) -> None:
    """``summary.json`` and ``summary.csv`` (one row per column)."""
    out = Path(out_dir)
    write_json(out / "summary.json", summary)
    keys = ["column", "n_classes", "n_test", "accuracy", "macro_f1", "macro_f1_ci_low", "macro_f1_ci_high",
            "mean_average_precision", "chance_accuracy", "chance_macro_f1"]
    rows: list[list[Any]] = [keys]
    rows += [[row[k] if isinstance(row[k], (str, int)) else _r(row[k]) for k in keys] for row in summary["columns"]]
    atomic_write_text(out / "summary.csv", csv_text(rows))


# Tick labels of the F1 axis near 1, where −log(1 − F1) spreads scores out.
_HIGH_F1 = (0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)


def f1_axis(ax, f1: Sequence[float] | np.ndarray, label: str = "macro-F1", max_ticks: int = 7) -> None:
    """Put F1 values on the paper's axis −log(1 − F1) (plot ``neg_log_error(f1)``): the y range spans the
    data (not 0–0.999) and 4 to ``max_ticks`` ticks are labelled in F1, at the coarsest round step that
    gives enough of them."""
    values = neg_log_error(np.asarray([v for v in np.ravel(f1) if np.isfinite(v)] or [0.0, 0.9]))
    low, high = float(values.min()), float(values.max())
    pad = max(0.06 * (high - low), 0.02)
    low, high = max(low - pad, 0.0), high + pad
    kept: list[float] = []
    for step in (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001):
        candidates = sorted({*np.round(np.arange(0.0, 1.0, step), 4), *_HIGH_F1})
        ticks = [t for t in candidates if low <= neg_log_error(t) <= high]
        kept = ticks
        if len(ticks) > max_ticks:  # they crowd near 1: keep those at least a max_ticks-th of the axis apart
            kept = ticks[:1]
            for t in ticks[1:]:
                if neg_log_error(t) - neg_log_error(kept[-1]) >= (high - low) / max_ticks:
                    kept.append(t)
        if len(kept) >= 4:
            break
    ax.set_ylim(low, high)
    ax.set_yticks(neg_log_error(np.asarray(kept)), [f"{t:g}" for t in kept])
    ax.set_ylabel(f"{label} (axis −log(1−F1))")
    ax.grid(axis="y", alpha=0.3)
