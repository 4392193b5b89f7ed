#!/usr/bin/env bash
# End-to-end demo on generated synthetic cells (no downloads, no real data, CPU): `make demo`.
# Every step writes under $1 (default demo-run/) and is rerun from scratch with --overwrite.
set -euo pipefail
OUT=${1:-demo-run}
mkdir -p "$OUT"
step() { echo; echo "== $*"; }

step "1. synthetic cells: 5 classes x 2 sites"
hemoembed demo-data "$OUT/cells" --n-per-class 40 --sites 2 --size 64 --seed 0 --overwrite
hemoembed check "$OUT/cells" --out "$OUT/rejects.csv" --overwrite
