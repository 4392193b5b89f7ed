"""Figure: t-SNE map panels, one per colour column of ``hemoembed tsne`` coordinates.csv (e.g. cell type and
cell size side by side).

Usage: .venv/bin/python scripts/fig_tsne.py MAP_DIR --out fig_tsne.png [--columns label cell_size]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hemoembed.data.manifest import read_csv_rows
from hemoembed.errors import InputError, script_main
from hemoembed.explain.plots import PANEL_PALETTES, save_figure, scatter_categories
from hemoembed.plotting import pyplot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("map_dir", type=Path, help="output folder of hemoembed tsne STORE ... --out MAP_DIR")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--columns", nargs="*", default=None, help="colour columns (default: all in the CSV)")
    args = parser.parse_args()
    header, rows = read_csv_rows(args.map_dir / "coordinates.csv")
    coords = np.array([[float(r[1]), float(r[2])] for r in rows])
    columns = args.columns or header[3:] or [None]
    unknown = [c for c in columns if c is not None and c not in header[3:]]
    if unknown:
        raise InputError(f"{args.map_dir / 'coordinates.csv'}: no colour column {', '.join(unknown)} "
                         f"(it has {', '.join(header[3:]) or 'none'})")
    fig, axes = pyplot().subplots(1, len(columns), figsize=(7.0 * len(columns), 5.6), squeeze=False)
    for i, (ax, column) in enumerate(zip(axes[0], columns)):
        values = [r[header.index(column)] for r in rows] if column else None
        title = f"t-SNE of {len(rows)} cells" + (f", coloured by {column}" if column else "")
        scatter_categories(ax, coords, values, legend_title=column or "", title=title,
                           palette=PANEL_PALETTES[i % len(PANEL_PALETTES)])
    fig.tight_layout()
    print(save_figure(fig, args.out))


if __name__ == "__main__":
    script_main(main)
