"""Label-efficiency figure: macro-F1 against the labelled fraction, from ``fit-svm --support`` outputs.

Reads ``learning_curve_summary.csv`` of every column folder under each given ``fit-svm --out`` folder and
draws one line per column (labelled fraction = labels / labels with ``all``), on the paper's axis
−log(1 − F1).

    python scripts/fig_label_efficiency.py svm_wbcatt [svm_other ...] --out fig_label_efficiency.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hemoembed.data.manifest import read_csv_records
from hemoembed.errors import InputError, script_main
from hemoembed.plotting import pyplot, save_figure
from hemoembed.tasks.common import f1_axis, neg_log_error


def read_curves(run_dirs: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (labelled fraction, mean macro-F1)} for every column folder that has a learning curve."""
    curves = {}
    for run in run_dirs:
        for summary in sorted(run.glob("*/learning_curve_summary.csv")):
            rows = read_csv_records(summary, ("n_labels", "macro_f1_mean"), "a fit-svm learning-curve summary")
            full = max(float(r["n_labels"]) for r in rows)
            name = summary.parent.name if len(run_dirs) == 1 else f"{run.name}/{summary.parent.name}"
            curves[name] = (np.array([float(r["n_labels"]) / full for r in rows]),
                            np.array([float(r["macro_f1_mean"]) for r in rows]))
    if not curves:
        raise InputError(f"no learning_curve_summary.csv under {', '.join(map(str, run_dirs))} "
                         "(run fit-svm with --support)")
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="fit-svm output folders")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    from matplotlib.ticker import LogLocator, ScalarFormatter

    curves = read_curves(args.runs)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for name, (fraction, f1) in curves.items():
        order = np.argsort(fraction)
        ax.plot(100 * fraction[order], neg_log_error(f1[order]), "o-", ms=4, label=name)
    f1_axis(ax, np.concatenate([f1 for _, f1 in curves.values()]))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("labelled training images (% of all)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Label efficiency of the linear SVM on the embedding", fontsize=11)
    ax.legend(title="label column", fontsize=9, bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    save_figure(fig, args.out)
    print(args.out)


if __name__ == "__main__":
    script_main(main)
