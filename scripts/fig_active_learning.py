"""Figures of an active-learning study (``hemoembed active-learn --simulate --out DIR``).

Writes ``DIR/fig_curves.png`` (macro-F1 and every class on the paper's axis −log(1 − F1), mean over
repeats with the power-law fits, the all-labels score dashed) and ``DIR/fig_rates.png`` (the per-class
learning rate r of each strategy, with the one-sided Wilcoxon p-value of uncertainty vs random).

    python scripts/fig_active_learning.py al_study
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hemoembed.plotting import pyplot, save_figure
from hemoembed.tasks.active import read_tidy_csv
from hemoembed.tasks.active.power_law import MACRO, compare_rates, fit_curves, plot_curves


def rates_figure(fits: list[dict], path: Path) -> Path:
    """Grouped bars: per class, the fitted rate r of every strategy (flat curves left out)."""
    plt = pyplot()
    classes = sorted({f["class"] for f in fits if f["class"] != MACRO})
    strategies = sorted({f["strategy"] for f in fits})
    rate = {(f["strategy"], f["class"]): f["r"] for f in fits}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(classes)), 4))
    width = 0.8 / max(1, len(strategies))
    for s, strategy in enumerate(strategies):
        values = [rate.get((strategy, c), np.nan) for c in classes]
        ax.bar(np.arange(len(classes)) + s * width, values, width, label=strategy)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylabel("learning rate r")
    title = "per-class learning rates"
    if "uncertainty" in strategies and "random" in strategies:
        test = compare_rates(fits, "uncertainty", "random")
        if test["p_value"] is not None:
            title += f" (uncertainty > random: one-sided Wilcoxon p = {test['p_value']:.3g})"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="output folder of active-learn --simulate")
    args = parser.parse_args()
    rows = read_tidy_csv(str(args.study / "results.csv"))
    fits = fit_curves(rows)
    classes = [MACRO] + sorted({f["class"] for f in fits if f["class"] != MACRO})
    print(plot_curves(rows, fits, args.study / "fig_curves.png", classes=classes))
    print(rates_figure(fits, args.study / "fig_rates.png"))


if __name__ == "__main__":
    main()
