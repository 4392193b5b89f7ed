"""Figure: redraw the GradCAM++ panel of a ``hemoembed gradcam`` output folder (the command writes the same
figure as CAM_DIR/panel.png): one row per explanation, each image in its raw colours (role and class folder in
the title) next to its overlay, one colour bar, and the explained score in words.

Usage: .venv/bin/python scripts/fig_gradcam.py CAM_DIR --out fig_gradcam.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hemoembed.errors import HemoembedError
from hemoembed.explain.cams import panel_from_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cam_dir", type=Path, help="output folder of hemoembed gradcam ... --out CAM_DIR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        print(panel_from_csv(args.cam_dir, args.out))
    except HemoembedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
