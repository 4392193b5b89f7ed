"""The ``fit-svm --support`` curve: test macro-F1 against labelled images per class, on nested support sets.

Support sets are drawn from the training rows only (:func:`~hemoembed.tasks.common.sampling.nested_support_sets`),
so the 5-per-class set contains the 2-per-class set.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...config import csv_text
from ...errors import InputError
from ..common.metrics import macro_f1, neg_log_error
from ..common.reports import f1_axis
from ..common.sampling import ALL, nested_support_sets


def parse_sizes(text: str) -> list[int | str]:
    """``"2,5,10,all"`` → ``[2, 5, 10, "all"]``; sizes must be integers ≥ 2 or ``all``."""
    sizes: list[int | str] = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        if part.lower() == ALL:
            sizes.append(ALL)
            continue
        try:
            value = int(part)
        except ValueError:
            raise InputError(f"--support: {part!r} is not an integer or 'all'") from None
        if value < 2:
            raise InputError(f"--support: {value} labelled images per class is too few (need at least 2)")
        sizes.append(value)
    if not sizes:
        raise InputError("--support: no sizes given (example: 2,5,10,all)")
    return sorted(set(sizes), key=lambda s: float("inf") if s == ALL else s)


def support_curve(make_model: Callable[[], Any], X_train: np.ndarray, y_train: Sequence[str],
                  X_test: np.ndarray, y_test: Sequence[str], sizes: Sequence[int | str], *, repeats: int = 3,
                  seed: int = 0, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Test macro-F1 of a model fitted on nested support sets, ``repeats`` seeds per size."""
    classes = sorted(set(map(str, y_train)))
    y_train = np.asarray([str(v) for v in y_train])
    rows = []
    for repeat in range(repeats):
        sets = nested_support_sets(y_train, sizes, seed=seed * 1000 + repeat)
        for size, idx in sets.items():
            model = make_model().fit(X_train[idx], y_train[idx])
            f1 = macro_f1(y_test, model.predict(X_test), classes)
            rows.append({"per_class": str(size), "n_labels": len(idx), "repeat": repeat, "macro_f1": f1})
            if progress is not None:
                progress(1)
    return rows


def summarize_curve(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation of macro-F1 (and mean label count) per support size."""
    out = []
    for size in dict.fromkeys(r["per_class"] for r in rows):
        group = [r for r in rows if r["per_class"] == size]
        f1 = np.array([r["macro_f1"] for r in group])
        out.append({"per_class": size, "n_labels": float(np.mean([r["n_labels"] for r in group])),
                    "repeats": len(group), "macro_f1_mean": float(f1.mean()), "macro_f1_std": float(f1.std())})
    return out


def write_support_curve(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, title: str) -> list[Path]:
    """``learning_curve.csv`` (every repeat), ``learning_curve_summary.csv`` and ``learning_curve.png`` (the
    files keep the name they had when the support curve was called a learning curve)."""
    from ...config import atomic_write_text
    from ...plotting import pyplot, save_figure

    out = Path(out_dir)
    keys = ["per_class", "n_labels", "repeat", "macro_f1"]
    atomic_write_text(out / "learning_curve.csv", csv_text([keys] + [[r[k] for k in keys] for r in rows]))
    summary = summarize_curve(rows)
    skeys = ["per_class", "n_labels", "repeats", "macro_f1_mean", "macro_f1_std"]
    atomic_write_text(out / "learning_curve_summary.csv", csv_text([skeys] + [[s[k] for k in skeys] for s in summary]))
    plt = pyplot()
    from matplotlib.ticker import NullLocator

    fig, ax = plt.subplots(figsize=(6, 4.2))
    x = [s["n_labels"] for s in summary]
    ax.plot(x, neg_log_error([s["macro_f1_mean"] for s in summary]), "o-", color="#1f77b4", label="mean over repeats")
    ax.scatter([r["n_labels"] for r in rows], neg_log_error([r["macro_f1"] for r in rows]), s=10, alpha=0.4,
               color="#1f77b4", label="one repeat")
    for s, xi in zip(summary, x):
        ax.annotate(f"{s['per_class']}/class", (xi, float(neg_log_error(s["macro_f1_mean"]))), fontsize=8,
                    textcoords="offset points", xytext=(4, -11))
    f1_axis(ax, [r["macro_f1"] for r in rows] + [s["macro_f1_mean"] for s in summary])
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("labelled training images (labels per class annotated)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    save_figure(fig, out / "learning_curve.png")
    return [out / "learning_curve.csv", out / "learning_curve_summary.csv", out / "learning_curve.png"]
