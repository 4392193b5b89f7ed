#!/usr/bin/env bash
# End-to-end demo on generated synthetic cells (no downloads, no real data, CPU): `make demo`.
# Every step writes under $1 (default demo-run/) and is rerun from scratch with --overwrite.
set -euo pipefail
OUT=${1:-demo-run}
SCRIPTS=$(dirname "$0")  # the figure scripts and the recipe, wherever this runs from (the image: /runs)
mkdir -p "$OUT"
step() { echo; echo "== $*"; }

step "1. synthetic cells: 5 classes x 2 sites"
hemoembed demo-data "$OUT/cells" --n-per-class 40 --sites 2 --size 64 --seed 0 --overwrite
# cells/manifest.csv lists every cell, cells/site0.csv and site1.csv one site each: site 1 plays the new lab of step 7
hemoembed check "$OUT/cells" --out "$OUT/rejects.csv" --overwrite

step "2. self-supervised pretraining on site 0 (no labels; random init, 64 px, 40 short epochs, about 4 CPU minutes), then a probe beside its baselines"
# The recipe (scripts/demo_pretrain.json, saved resolved as pretrain/config.json) is the scratch preset sized for
# 200 cells on a CPU; tests/model/test_demo_recipe.py guards that it learns, benchmarks/RESULTS.md has the numbers.
hemoembed pretrain "$OUT/cells/site0.csv" --out "$OUT/pretrain" --config "$SCRIPTS/demo_pretrain.json" --overwrite
# is it worth having? the same linear SVM on the embedding, an untrained encoder, raw pixels and chance
hemoembed probe "$OUT/pretrain/encoder.keras" "$OUT/cells/site0.csv" --out "$OUT/probe" --overwrite

step "3. frozen, fingerprinted embedding store"
hemoembed embed "$OUT/pretrain/encoder.keras" "$OUT/cells" --store "$OUT/store" --batch-size 64 --overwrite
hemoembed store info "$OUT/store"

step "4. linear SVM on the embedding: cell type and site, learning curve with few labels"
hemoembed fit-svm "$OUT/store" --labels "$OUT/cells/manifest.csv" --columns label,site --test-fraction 0.2 \
    --support 2,5,10,all --repeats 2 --bootstrap 200 --out "$OUT/svm" --overwrite
hemoembed predict "$OUT/svm" --store "$OUT/store" --out "$OUT/predictions.csv" --overwrite
python "$SCRIPTS/fig_label_efficiency.py" "$OUT/svm" --out "$OUT/fig_label_efficiency.png"

step "5. explanations: t-SNE map by cell type and site, nearest-neighbour gallery, GradCAM++ on a triplet"
hemoembed tsne "$OUT/store" --labels "$OUT/cells/manifest.csv" --colour-by label --colour-by site \
    --out "$OUT/tsne" --seed 0 --overwrite
python "$SCRIPTS/fig_tsne.py" "$OUT/tsne" --out "$OUT/fig_tsne.png"
anchor=$(ls "$OUT"/cells/lymphocyte/site0_*.png | head -1)
positive=$(ls "$OUT"/cells/lymphocyte/site0_*.png | sed -n 2p)
negative=$(ls "$OUT"/cells/neutrophil/site0_*.png | head -1)
hemoembed neighbours "$OUT/store" --path "lymphocyte/$(basename "$anchor")" -k 6 --gallery "$OUT/neighbours.png"
hemoembed gradcam "$OUT/pretrain/encoder.keras" "$anchor" --against "$positive" --against "$negative" \
    --out "$OUT/gradcam" --overwrite
python "$SCRIPTS/fig_gradcam.py" "$OUT/gradcam" --out "$OUT/fig_gradcam.png"

step "6. active learning: uncertainty vs random sampling, 20 labels per query"
hemoembed active-learn "$OUT/store" --simulate --labels "$OUT/cells/manifest.csv" --column label \
    --batch 20 --init 20 --strategy uncertainty,random --repeats 2 --out "$OUT/active" --seed 0 --overwrite
python "$SCRIPTS/fig_active_learning.py" "$OUT/active"

step "7. few-shot adapter: site 1 as a new site, 20 labelled shots, Reinhard colour transfer to the run's site-0 style"
# --save-encoder reference (the default): adapt/encoder.json points to pretrain/encoder.keras, whose weights the
# svm mode leaves unchanged, instead of a second 24 MB copy; every command loads it like a .keras encoder.
hemoembed adapt --source "$OUT/pretrain" --target "$OUT/cells/site1.csv" \
    --shots 20 --mode svm --save-encoder reference --out "$OUT/adapt" --seed 0 --overwrite
hemoembed predict "$OUT/adapt" --store "$OUT/adapt/store" --out "$OUT/adapt_predictions.csv" --overwrite
# new crops from the new site: embedded through the referenced encoder, Reinhard transfer inside
hemoembed predict "$OUT/adapt" --encoder "$OUT/adapt/encoder.json" "$OUT/cells/site1.csv" \
    --out "$OUT/adapt_new_predictions.csv" --overwrite

echo; echo "demo finished: outputs in $OUT/"
# make demo puts .venv/bin on the PATH of this script only: say how a new shell gets the hemoembed command
where=$(command -v hemoembed || true)
if [ -f "$(dirname "$where")/activate" ]; then echo "to type hemoembed in a new shell: source $(dirname "$where")/activate"; fi
echo "review app on these outputs: hemoembed serve --store $OUT/store --model $OUT/svm --column label --map $OUT/tsne --data $OUT/review"
