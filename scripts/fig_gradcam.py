"""Figure: redraw the GradCAM++ panel of a ``hemoembed gradcam`` output folder (the command writes the same
figure as CAM_DIR/panel.png): per explanation a row of images in their raw colours (role and class folder in
the title) above a row of their overlays, one colour bar, and the explained score in words.

Usage: .venv/bin/python scripts/fig_gradcam.py CAM_DIR --out fig_gradcam.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hemoembed.errors import script_main
from hemoembed.explain.cams import panel_from_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cam_dir", type=Path, help="output folder of hemoembed gradcam ... --out CAM_DIR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(panel_from_csv(args.cam_dir, args.out))


if __name__ == "__main__":
    script_main(main)
