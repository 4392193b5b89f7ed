"""Figures of an active-learning study, drawn from the fits and the rate test the analysis saved (never refitted,
so every number in a figure is the one in ``analysis.json`` and the terminal).

``fig_curves.png``: a grid of panels (macro-F1 first, then every class), the mean curve of each strategy with
its power-law fit and the all-labels score dashed, on the paper's axis −log(1 − F1) labelled in F1.
``fig_rates.png``: the fitted learning rate r per class and strategy, with the one-sided Wilcoxon p-value, or a
sentence saying why the rates cannot be compared.
"""
from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ..common.metrics import neg_log_error
from ..common.reports import f1_axis
from .power_law import FIT_COLUMNS, MACRO, R_MAX, at_bound, mean_curves, power_law, rate_test_text
from .simulation import ALL_LABELS, read_tidy_csv

# One colour per strategy in every panel and both figures (the all-labels line is black).
STRATEGY_COLOURS = {"uncertainty": "#1f77b4", "margin": "#9467bd", "entropy": "#2ca02c", "random": "#7f7f7f"}
WORDS = {MACRO: "macro-F1 (all classes)"}


def draw_study(rows: Sequence[dict[str, Any]], fits: Sequence[dict[str, Any]], summary: dict[str, Any],
               out_dir: str | os.PathLike) -> list[Path]:
    """Both figures into ``out_dir`` from the saved results, fits and summary."""
    from ...plotting import save_figure

    out = Path(out_dir)
    return [save_figure(curves_figure(rows, fits), out / "fig_curves.png"),
            save_figure(rates_figure(fits, summary), out / "fig_rates.png")]


def redraw(study_dir: str | os.PathLike) -> list[Path]:
    """Redraw both figures of an ``active-learn --simulate`` folder from its ``results.csv``,
    ``curve_fits.csv`` and ``analysis.json``."""
    study = Path(study_dir)
    try:
        summary = json.loads((study / "analysis.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{study / 'analysis.json'}: cannot read the study's analysis ({exc})") from None
    return draw_study(read_tidy_csv(str(study / "results.csv")), read_fits(study / "curve_fits.csv"), summary, study)


def read_fits(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``curve_fits.csv`` with their types (what :func:`~.power_law.fit_curves` returned)."""
    from ...data.manifest import read_csv_records

    fits = []
    for item in read_csv_records(path, FIT_COLUMNS, "a curve_fits.csv"):
        for key in ("pmax", "k", "n0", "r", "rmse", "final_f1", "full_label_f1"):
            item[key] = float(item[key]) if item[key] not in ("", "nan") else float("nan")
        item["flat"] = item["flat"] == "True"
        item["n_points"] = int(item["n_points"])
        item["labels_needed"] = int(item["labels_needed"]) if item["labels_needed"] else None
        fits.append(item)
    return fits


def curves_figure(rows: Sequence[dict[str, Any]], fits: Sequence[dict[str, Any]],
                  classes: Sequence[str] | None = None, columns: int = 3):
    """Mean curves and their saved power-law fits, one panel per class in a grid (macro-F1 first)."""
    from ...plotting import pyplot

    plt = pyplot()
    curves = mean_curves(rows)
    by_key = {(f["strategy"], f["class"]): f for f in fits}
    if classes is None:
        classes = [MACRO] + sorted({c for _, c in curves if c != MACRO})
    ncols = min(columns, len(classes))
    nrows = math.ceil(len(classes) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[len(classes):]:
        ax.axis("off")
    for ax, cls in zip(axes.flat, classes):
        seen: list[float] = []
        for (strategy, c), (n, p) in sorted(curves.items()):
            if c != cls or strategy == ALL_LABELS:
                continue
            colour = STRATEGY_COLOURS.get(strategy)
            ax.plot(n, neg_log_error(p), "o", ms=3, color=colour, label=strategy)
            seen += list(p)
            fit = by_key.get((strategy, c))
            if fit is not None and not fit["flat"]:
                grid = np.linspace(n.min(), n.max(), 200)
                model = np.clip(power_law(grid, fit["pmax"], fit["k"], fit["n0"], fit["r"]), 0.0, 1.0)
                ax.plot(grid, neg_log_error(model), "-", color=colour, lw=1)
        full = curves.get((ALL_LABELS, cls))
        if full is not None:
            ax.axhline(float(neg_log_error(full[1][-1])), color="k", ls="--", lw=1, label="all labels")
            seen.append(float(full[1][-1]))
        f1_axis(ax, seen, label="F1" if cls != MACRO else "macro-F1")
        if ax not in axes[:, 0]:
            ax.set_ylabel("")
        ax.set_xlabel("labelled images")
        ax.set_title(WORDS.get(cls, cls), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes.flat[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Active learning: test F1 as labels are added (dots: mean over repeats; lines: power-law fits)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def rates_figure(fits: Sequence[dict[str, Any]], summary: dict[str, Any]):
    """Grouped bars of the fitted rate r per class and strategy; rates at the bound are hatched, and when every
    rate sits there the figure says the fit is not identifiable instead of drawing bars."""
    from ...plotting import pyplot

    plt = pyplot()
    classes = sorted({f["class"] for f in fits if f["class"] != MACRO})
    strategies = sorted({f["strategy"] for f in fits}, key=lambda s: (s == "random", s))
    rate = {(f["strategy"], f["class"]): f["r"] for f in fits if not f["flat"]}
    fitted = [r for r in rate.values() if np.isfinite(r)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(classes) + 2), 4))
    tests = [summary[k] for k in sorted(summary) if k.startswith("rate_test_")]
    if not fitted or all(at_bound(r) for r in fitted):
        ax.axis("off")
        why = (f"Every fitted rate sits at the fit's upper bound r = {R_MAX:g}:\nthe curves rose before the first "
               "sampled label count, so how fast\neach strategy learns cannot be told from this study.\n\nNo rates "
               "are drawn and no test is made.\nSample smaller --init and --batch to compare the strategies."
               if fitted else "No curve has a trend to fit a rate to (all flat).")
        ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=10, linespacing=1.5)
        ax.set_title("Per-class learning rates: not identifiable", fontsize=11)
        return fig
    width = 0.8 / max(1, len(strategies))
    for s, strategy in enumerate(strategies):
        values = np.array([rate.get((strategy, c), np.nan) for c in classes])
        bars = ax.bar(np.arange(len(classes)) + s * width, values, width, label=strategy,
                      color=STRATEGY_COLOURS.get(strategy))
        for bar, value in zip(bars, values):
            if at_bound(value):
                bar.set_hatch("//")
            elif not np.isfinite(value):  # a flat curve: no trend, no rate
                ax.text(bar.get_x() + bar.get_width() / 2, 0, "flat (no rate)", ha="center", va="bottom", fontsize=8,
                        rotation=90, color=STRATEGY_COLOURS.get(strategy, "k"))
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylabel("learning rate r (larger: learns faster)")
    ax.grid(axis="y", alpha=0.3)
    title = "Per-class learning rates of the power-law fits"
    for test in tests:  # notes wrapped: a long one would otherwise widen the figure into a strip
        title += "".join("\n" + textwrap.fill(line, 110) for line in rate_test_text(test, sep="\n").splitlines())
    if any(at_bound(r) for r in fitted):
        ax.bar([np.nan], [np.nan], color="white", edgecolor="k", hatch="//",
               label=f"at the bound r = {R_MAX:g} (not identifiable)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
