"""Redraw the figures of an active-learning study (``hemoembed active-learn --simulate --out DIR``).

The command already writes ``DIR/fig_curves.png`` (macro-F1 and every class on the paper's axis
−log(1 − F1), mean over repeats with the power-law fits, the all-labels score dashed) and ``DIR/fig_rates.png``
(the per-class learning rate r of each strategy, with the one-sided Wilcoxon p-value of uncertainty vs
random). This script redraws both from the saved ``results.csv``, ``curve_fits.csv`` and ``analysis.json``
(nothing is refitted: the figures show the numbers the command printed), e.g. after editing the style:

    python scripts/fig_active_learning.py al_study
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hemoembed.errors import script_main
from hemoembed.tasks.active.figures import redraw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="output folder of active-learn --simulate")
    args = parser.parse_args()
    for path in redraw(args.study):
        print(path)


if __name__ == "__main__":
    script_main(main)
