"""Figure of the adapter ablation and shot-count curve from an ``ablation.json``.

``hemoembed adapt --ablation`` (or ``benchmarks/adapt_bccd.py``) writes ``ablation.json`` and this figure;
the script redraws it, e.g. for a paper, from the saved numbers only:

    .venv/bin/python scripts/fig_ablation.py adapt_bccd/ablation.json --out fig_ablation.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hemoembed.config import read_json_object
from hemoembed.errors import InputError, script_main


def main() -> None:
    from hemoembed.tasks.adapt.study import plot_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="ablation.json written by hemoembed adapt --ablation")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: next to the results)")
    args = parser.parse_args()
    result = read_json_object(args.results, "an adapter study's ablation.json")
    if not result.get("ablation_table") and not result.get("curve_table"):
        raise InputError(f"{args.results}: no ablation_table or curve_table to draw")
    out = args.out or args.results.with_suffix(".png")
    plot_study(result, out)
    print(f"figure written to {out}")


if __name__ == "__main__":
    script_main(main)
