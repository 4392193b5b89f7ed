"""Figure: GradCAM++ panels from a ``hemoembed gradcam`` output folder: one row per explanation, each image of
the pair/triplet next to its overlay, titled with its role and the explained score.

Usage: .venv/bin/python scripts/fig_gradcam.py CAM_DIR --out fig_gradcam.png
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from hemoembed.data.imageio import load_image
from hemoembed.data.manifest import read_csv_rows
from hemoembed.explain.plots import image_grid, save_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cam_dir", type=Path, help="output folder of hemoembed gradcam ... --out CAM_DIR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    header, rows = read_csv_rows(args.cam_dir / "results.csv")
    col = {name: i for i, name in enumerate(header)}
    grid, titles = defaultdict(list), defaultdict(list)
    for row in rows:
        e = row[col["explanation"]]
        grid[e] += [load_image(args.cam_dir / row[col["input"]]), load_image(args.cam_dir / row[col["overlay"]])]
        titles[e] += [f"{row[col['role']]}\n{Path(row[col['image']]).name[:24]}",
                      f"GradCAM++ ({row[col['target']]})\nscore {float(row[col['score']]):.3f}"]
    keys = sorted(grid, key=int)
    fig = image_grid([grid[k] for k in keys], [titles[k] for k in keys], thumb=2.1,
                     suptitle="Where the encoder looked: GradCAM++ on the last convolution")
    print(save_figure(fig, args.out))


if __name__ == "__main__":
    main()
