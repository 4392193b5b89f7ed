"""Hostile-but-fair inputs through every command, as a shell runs them (a real subprocess each).

Every row of ``ROWS`` must end with exit code 2, exactly one line on stderr (``error: ...``), no traceback,
and nothing already written changed: each row runs on its own hard-linked copy of a world of real artefacts
(images, a 32-px encoder with random weights, a store, saved SVMs, a labelling session, a t-SNE map, damaged
copies of each) whose every file is hashed before and after. A new command is covered by adding rows;
``test_every_command_has_rows`` fails until it has some. The rows are marked ``slow`` as a table (one row
takes 1-15 s, the table minutes on 2 cores): ``make test`` runs them, ``make test-fast`` only the coverage test.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import built_once
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# (row id, argv with {placeholders}): {world} artefacts are listed in _build_world; {out} is a fresh path.
ROWS: list[tuple[str, list[str]]] = [
    # ------------------------------------------------------------------ check
    ("check: missing folder", ["check", "{world}/nope"]),
    ("check: empty folder", ["check", "{bad}/empty_dir"]),
    ("check: not a manifest", ["check", "{bad}/text.png"]),
    ("check: manifest without path column", ["check", "{bad}/nopath.csv"]),
    ("check: ragged manifest", ["check", "{bad}/ragged.csv"]),
    ("check: NUL in manifest", ["check", "{bad}/nul.csv"]),
    ("check: latin-1 manifest", ["check", "{bad}/latin1.csv"]),
    ("check: header-only manifest", ["check", "{bad}/header_only.csv"]),
    ("check: duplicate columns", ["check", "{bad}/dupcols.csv"]),
    ("check: path outside root", ["check", "{bad}/outside.csv"]),
    ("check: symlink outside root", ["check", "{bad}/link_out"]),
    ("check: --min-size -1", ["check", "{cells}", "--min-size", "-1"]),
    ("check: --min-size 0", ["check", "{cells}", "--min-size", "0"]),
    ("check: --min-size 8 (below the usable size)", ["check", "{cells}", "--min-size", "8"]),
    ("check: --out exists", ["check", "{cells}", "--out", "{world}/labels.csv"]),
    ("check: --image-root with a folder", ["check", "{cells}", "--image-root", "{cells}"]),
    ("check: unknown option", ["check", "{cells}", "--frobnicate"]),
    ("check: --out is the manifest", ["check", "{world}/cells.csv", "--out", "{world}/cells.csv", "--overwrite"]),
    # ------------------------------------------------------------------ demo-data
    ("demo-data: --n-per-class 0", ["demo-data", "{out}", "--n-per-class", "0"]),
    ("demo-data: --n-per-class -1", ["demo-data", "{out}", "--n-per-class", "-1"]),
    ("demo-data: --sites 0", ["demo-data", "{out}", "--sites", "0"]),
    ("demo-data: --size 0", ["demo-data", "{out}", "--size", "0"]),
    ("demo-data: --size 100000", ["demo-data", "{out}", "--size", "100000"]),
    ("demo-data: --seed -1", ["demo-data", "{out}", "--seed", "-1"]),
    ("demo-data: output folder exists", ["demo-data", "{cells}", "--n-per-class", "1"]),
    ("demo-data: output is a file", ["demo-data", "{world}/labels.csv", "--n-per-class", "1"]),
    # ------------------------------------------------------------------ colour-reference
    ("colour-reference: --sample 0", ["colour-reference", "{cells}", "--out", "{out}.json", "--sample", "0"]),
    ("colour-reference: --sample -1", ["colour-reference", "{cells}", "--out", "{out}.json", "--sample", "-1"]),
    ("colour-reference: missing images", ["colour-reference", "{world}/nope", "--out", "{out}.json"]),
    ("colour-reference: --out exists", ["colour-reference", "{cells}", "--out", "{world}/ref.json"]),
    ("colour-reference: only a bomb", ["colour-reference", "{bad}/bomb_dir", "--out", "{out}.json"]),
    ("colour-reference: only a text file", ["colour-reference", "{bad}/text_dir", "--out", "{out}.json"]),
    # ------------------------------------------------------------------ normalize
    ("normalize: --out is the input", ["normalize", "{cells}", "--method", "grayworld", "--out", "{cells}",
                                       "--overwrite"]),
    ("normalize: --out inside the input", ["normalize", "{cells}", "--method", "grayworld", "--out",
                                           "{cells}/normed", "--overwrite"]),
    ("normalize: --out contains the input", ["normalize", "{world}/nest/cells", "--method", "grayworld", "--out",
                                             "{world}/nest", "--overwrite"]),
    ("normalize: --out holds manifest images", ["normalize", "{world}/cells.csv", "--method", "grayworld",
                                                "--out", "{cells}", "--overwrite"]),
    ("normalize: reinhard without reference", ["normalize", "{cells}", "--method", "reinhard", "--out", "{out}"]),
    ("normalize: garbage reference", ["normalize", "{cells}", "--method", "reinhard", "--reference",
                                      "{bad}/garbage.json", "--out", "{out}"]),
    ("normalize: negative-std reference", ["normalize", "{cells}", "--method", "reinhard", "--reference",
                                           "{bad}/negative_std.json", "--out", "{out}"]),
    ("normalize: --out exists", ["normalize", "{cells}", "--method", "grayworld", "--out", "{world}/svm"]),
    # ------------------------------------------------------------------ fit-svm
    ("fit-svm: missing store", ["fit-svm", "{world}/nope", "--out", "{out}"]),
    ("fit-svm: store dim disagrees", ["fit-svm", "{bad}/store_dim", "--labels", "{world}/labels.csv",
                                      "--out", "{out}"]),
    ("fit-svm: list-valued header", ["fit-svm", "{bad}/store_list", "--labels", "{world}/labels.csv",
                                     "--out", "{out}"]),
    ("fit-svm: narrow part", ["fit-svm", "{bad}/store_narrow", "--labels", "{world}/labels.csv", "--out", "{out}"]),
    ("fit-svm: part without embedding", ["fit-svm", "{bad}/store_nocol", "--labels", "{world}/labels.csv",
                                         "--out", "{out}"]),
    ("fit-svm: --C 0", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--C", "0", "--out", "{out}"]),
    ("fit-svm: --C abc", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--C", "abc", "--out", "{out}"]),
    ("fit-svm: --C nan", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--C", "nan", "--out", "{out}"]),
    ("fit-svm: --out is the store", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--out", "{store}",
                                     "--overwrite"]),
    ("fit-svm: --cv -2", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--cv", "-2", "--out", "{out}"]),
    ("fit-svm: --test-fraction 1.5", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--test-fraction",
                                      "1.5", "--out", "{out}"]),
    ("fit-svm: --repeats 0", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--repeats", "0",
                              "--out", "{out}"]),
    ("fit-svm: --support 1", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--support", "1",
                              "--out", "{out}"]),
    ("fit-svm: labels not in store", ["fit-svm", "{store}", "--labels", "{bad}/labels_unknown.csv",
                                      "--out", "{out}"]),
    ("fit-svm: unknown column", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--columns", "nope",
                                 "--out", "{out}"]),
    ("fit-svm: --out exists", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--out", "{world}/svm"]),
    # ------------------------------------------------------------------ predict
    ("predict: missing model", ["predict", "{world}/nope", "--store", "{store}", "--out", "{out}.csv"]),
    ("predict: model.json missing keys", ["predict", "{bad}/svm_keys", "--store", "{store}", "--out", "{out}.csv"]),
    ("predict: model.json is a list", ["predict", "{bad}/svm_list", "--store", "{store}", "--out", "{out}.csv"]),
    ("predict: model.json classes not a list", ["predict", "{bad}/svm_classes", "--store", "{store}",
                                                "--out", "{out}.csv"]),
    ("predict: model.skops garbage", ["predict", "{bad}/svm_skops", "--store", "{store}", "--out", "{out}.csv"]),
    ("predict: damaged store", ["predict", "{world}/svm", "--store", "{bad}/store_dim", "--out", "{out}.csv"]),
    ("predict: --batch-size 0", ["predict", "{world}/svm", "--encoder", "{enc}", "{cells}", "--batch-size", "0",
                                 "--out", "{out}.csv"]),
    ("predict: neither store nor encoder", ["predict", "{world}/svm", "--out", "{out}.csv"]),
    ("predict: garbage encoder", ["predict", "{world}/svm", "--encoder", "{bad}/garbage.keras", "{cells}",
                                  "--out", "{out}.csv"]),
    ("predict: wrong encoder (same weights, crop 0.3)", ["predict", "{world}/svm", "--encoder", "{world}/wrong.keras",
                                                         "{cells}", "--out", "{out}.csv"]),
    ("predict: encoder reference whose source is gone", ["predict", "{world}/svm", "--encoder",
                                                         "{bad}/orphan/encoder.json", "{cells}", "--out", "{out}.csv"]),
    ("predict: not an encoder reference", ["predict", "{world}/svm", "--encoder", "{bad}/list.json", "{cells}",
                                           "--out", "{out}.csv"]),
    ("predict: only a bomb", ["predict", "{world}/svm", "--encoder", "{enc}", "{bad}/bomb_dir", "--out", "{out}.csv"]),
    ("predict: --out exists", ["predict", "{world}/svm", "--store", "{store}", "--out", "{world}/labels.csv"]),
    # ------------------------------------------------------------------ baseline
    ("baseline: --image-size 0", ["baseline", "{cells}", "--image-size", "0", "--out", "{out}"]),
    ("baseline: --batch-size 0", ["baseline", "{cells}", "--batch-size", "0", "--image-size", "32", "--out", "{out}"]),
    ("baseline: --head-epochs -1", ["baseline", "{cells}", "--head-epochs", "-1", "--image-size", "32",
                                    "--out", "{out}"]),
    ("baseline: --test-fraction 2", ["baseline", "{cells}", "--test-fraction", "2", "--image-size", "32",
                                     "--out", "{out}"]),
    ("baseline: unknown column", ["baseline", "{cells}", "--column", "nope", "--image-size", "32", "--out", "{out}"]),
    ("baseline: missing weights", ["baseline", "{cells}", "--weights", "{world}/nope.keras", "--image-size", "32",
                                   "--out", "{out}"]),
    ("baseline: --out is the image folder", ["baseline", "{cells}", "--image-size", "32", "--out", "{cells}",
                                             "--overwrite"]),
    # ------------------------------------------------------------------ embed
    ("embed: missing encoder", ["embed", "{world}/nope.keras", "{cells}", "--store", "{out}"]),
    ("embed: garbage encoder", ["embed", "{bad}/garbage.keras", "{cells}", "--store", "{out}"]),
    ("embed: missing images", ["embed", "{enc}", "{world}/nope", "--store", "{out}"]),
    ("embed: --batch-size 0", ["embed", "{enc}", "{cells}", "--store", "{out}", "--batch-size", "0"]),
    ("embed: --batch-size 0 into a store", ["embed", "{enc}", "{cells}", "--store", "{store}", "--batch-size", "0"]),
    ("embed: --part-size 0", ["embed", "{enc}", "{cells}", "--store", "{out}", "--part-size", "0"]),
    ("embed: --metadata path", ["embed", "{enc}", "{world}/cells.csv", "--store", "{out}", "--metadata", "path"]),
    ("embed: unknown metadata", ["embed", "{enc}", "{cells}", "--store", "{out}", "--metadata", "ward"]),
    ("embed: --batch-size abc", ["embed", "{enc}", "{cells}", "--store", "{out}", "--batch-size", "abc"]),
    ("embed: --store is a file", ["embed", "{enc}", "{cells}", "--store", "{world}/labels.csv"]),
    ("embed: --store is not a store", ["embed", "{enc}", "{cells}", "--store", "{world}/svm"]),
    ("embed: encoder reference whose source changed", ["embed", "{bad}/changed/encoder.json", "{cells}", "--store",
                                                       "{out}"]),
    ("embed: store of another encoder", ["embed", "{world}/wrong.keras", "{cells}", "--store", "{store}"]),
    ("embed: store dim disagrees", ["embed", "{enc}", "{cells}", "--store", "{bad}/store_dim"]),
    ("embed: store of a future format", ["embed", "{enc}", "{cells}", "--store", "{bad}/store_future"]),
    ("embed: --strict with a bomb", ["embed", "{enc}", "{bad}/bomb_dir", "--store", "{out}", "--strict"]),
    ("embed: symlink outside root", ["embed", "{enc}", "{bad}/link_out", "--store", "{out}"]),
    ("embed: --store is the image folder", ["embed", "{enc}", "{cells}", "--store", "{cells}", "--overwrite"]),
    ("embed: --store contains the images", ["embed", "{enc}", "{world}/nest/cells", "--store", "{world}/nest",
                                            "--overwrite"]),
    ("embed: --shard 0/2", ["embed", "{enc}", "{cells}", "--store", "{out}", "--shard", "0/2"]),
    ("embed: --shard 3/2", ["embed", "{enc}", "{cells}", "--store", "{out}", "--shard", "3/2"]),
    ("embed: --shard abc", ["embed", "{enc}", "{cells}", "--store", "{out}", "--shard", "abc"]),
    ("embed: --dtype float64", ["embed", "{enc}", "{cells}", "--store", "{out}", "--dtype", "float64"]),
    ("embed: --dtype float16 into a float32 store", ["embed", "{enc}", "{cells2}", "--store", "{store}", "--dtype",
                                                    "float16"]),
    ("embed: --strategy nope", ["embed", "{enc}", "{cells}", "--store", "{out}", "--strategy", "nope"]),
    # ------------------------------------------------------------------ store info
    ("store info: missing", ["store", "info", "{world}/nope"]),
    ("store info: not JSON", ["store", "info", "{bad}/store_notjson"]),
    ("store info: dim disagrees", ["store", "info", "{bad}/store_dim"]),
    ("store info: list-valued header", ["store", "info", "{bad}/store_list"]),
    ("store info: narrow part", ["store", "info", "{bad}/store_narrow"]),
    ("store info: part without embedding", ["store", "info", "{bad}/store_nocol"]),
    ("store info: future format", ["store", "info", "{bad}/store_future"]),
    ("store info: no such subcommand", ["store", "nope", "{store}"]),
    # ------------------------------------------------------------------ store index
    ("store convert: missing", ["store", "convert", "{world}/nope", "--dtype", "float16", "--out", "{out}"]),
    ("store convert: damaged store", ["store", "convert", "{bad}/store_dim", "--dtype", "float16", "--out", "{out}"]),
    ("store convert: already float32", ["store", "convert", "{store}", "--dtype", "float32", "--out", "{out}"]),
    ("store convert: unknown dtype", ["store", "convert", "{store}", "--dtype", "int8", "--out", "{out}"]),
    ("store convert: --out is the store", ["store", "convert", "{store}", "--dtype", "float16", "--out", "{store}",
                                           "--overwrite"]),
    ("store convert: --out exists", ["store", "convert", "{store}", "--dtype", "float16", "--out", "{world}/svm"]),
    ("store index: missing", ["store", "index", "{world}/nope"]),
    ("store index: damaged store", ["store", "index", "{bad}/store_dim"]),
    ("store index: --cells 0", ["store", "index", "{store}", "--cells", "0"]),
    ("store index: more cells than rows", ["store", "index", "{store}", "--cells", "1000"]),
    ("store index: --recall 0", ["store", "index", "{store}", "--recall", "0"]),
    ("store index: --recall 1.5", ["store", "index", "{store}", "--recall", "1.5"]),
    ("store index: --recall nan", ["store", "index", "{store}", "--recall", "nan"]),
    ("store index: unknown metric", ["store", "index", "{store}", "--metric", "manhattan"]),
    ("store index: --seed -1", ["store", "index", "{store}", "--seed", "-1"]),
    # ------------------------------------------------------------------ neighbors
    ("neighbours: neither path nor image", ["neighbours", "{store}"]),
    ("neighbours: path not stored", ["neighbours", "{store}", "--path", "a/nope.png"]),
    ("neighbours: -k 0", ["neighbours", "{store}", "--path", "{first}", "-k", "0"]),
    ("neighbours: -k -1", ["neighbours", "{store}", "--path", "{first}", "-k", "-1"]),
    ("neighbours: --image without encoder", ["neighbours", "{store}", "--image", "{cells}/a/0.png"]),
    ("neighbours: --image bomb", ["neighbours", "{store}", "--encoder", "{enc}", "--image", "{bad}/bomb_dir/bomb.png"]),
    ("neighbours: --image text", ["neighbours", "{store}", "--encoder", "{enc}", "--image", "{bad}/text.png"]),
    ("neighbours: --image tiny", ["neighbours", "{store}", "--encoder", "{enc}", "--image", "{bad}/tiny.png"]),
    ("neighbours: --image missing", ["neighbours", "{store}", "--encoder", "{enc}", "--image", "{world}/nope.png"]),
    ("neighbours: wrong encoder", ["neighbours", "{store}", "--encoder", "{world}/wrong.keras", "--image",
                                  "{cells}/a/0.png"]),
    ("neighbours: --out exists", ["neighbours", "{store}", "--path", "{first}", "--out", "{world}/labels.csv"]),
    ("neighbours: damaged store", ["neighbours", "{bad}/store_dim", "--path", "{first}"]),
    ("neighbours: --approximate without an index", ["neighbours", "{store}", "--path", "{first}", "--approximate"]),
    ("neighbours: --gallery exists", ["neighbours", "{store}", "--path", "{first}", "--gallery",
                                      "{world}/labels.csv"]),
    ("neighbours: --out is the store header", ["neighbours", "{store}", "--path", "{first}", "--out",
                                               "{store}/store.json", "--overwrite"]),
    ("neighbours: --gallery is the store", ["neighbours", "{store}", "--path", "{first}", "--gallery", "{store}",
                                            "--overwrite"]),
    # ------------------------------------------------------------------ pretrain
    ("pretrain: --margin -1", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--image-size", "32",
                               "--margin", "-1"]),
    ("pretrain: missing weights", ["pretrain", "{cells}", "--out", "{out}", "--weights", "{world}/nope.keras"]),
    ("pretrain: garbage weights", ["pretrain", "{cells}", "--out", "{out}", "--weights", "{bad}/garbage.keras",
                                   "--image-size", "32", "--batch-size", "4"]),
    ("pretrain: weights from an encoder reference whose source is gone", ["pretrain", "{cells}", "--out", "{out}",
                                                                        "--weights", "{bad}/orphan/encoder.json",
                                                                        "--image-size", "32", "--batch-size", "4"]),
    ("pretrain: --keep-checkpoints -1", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none",
                                         "--keep-checkpoints", "-1"]),
    ("pretrain: --epochs 0", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--epochs", "0"]),
    ("pretrain: --batch-size 1", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--batch-size", "1"]),
    ("pretrain: --lr -1", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--lr", "-1"]),
    ("pretrain: --lr nan", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--lr", "nan"]),
    ("pretrain: --val-fraction 0.9", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none",
                                      "--val-fraction", "0.9"]),
    ("pretrain: --image-size 8", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--image-size", "8"]),
    ("pretrain: --resume without a run", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--resume"]),
    ("pretrain: --resume and --overwrite", ["pretrain", "{cells}", "--out", "{out}", "--resume", "--overwrite"]),
    ("pretrain: config not JSON", ["pretrain", "{cells}", "--out", "{out}", "--config", "{bad}/garbage.json"]),
    ("pretrain: config a list", ["pretrain", "{cells}", "--out", "{out}", "--config", "{bad}/list.json"]),
    ("pretrain: config unknown key", ["pretrain", "{cells}", "--out", "{out}", "--config", "{bad}/unknown_key.json"]),
    ("pretrain: --out exists", ["pretrain", "{cells}", "--out", "{world}/svm", "--weights", "none"]),
    ("pretrain: --out is the image folder", ["pretrain", "{cells}", "--out", "{cells}", "--overwrite", "--weights",
                                             "none"]),
    ("pretrain: --loss nope", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--loss", "nope"]),
    ("pretrain: --temperature 0", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--temperature",
                                   "0"]),
    ("pretrain: --temperature inf", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--temperature",
                                     "inf"]),
    ("pretrain: --head banana", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--head", "banana"]),
    ("pretrain: --head mlp:0", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--head", "mlp:0"]),
    ("pretrain: --weight-decay -1", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--weight-decay",
                                     "-1"]),
    ("pretrain: --crop-scale 2,3", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--crop-scale",
                                    "2,3"]),
    ("pretrain: --crop-scale abc", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--crop-scale",
                                    "abc"]),
    ("pretrain: --hue 0.9", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--hue", "0.9"]),
    ("pretrain: --colour-jitter 1.5", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none",
                                       "--colour-jitter", "1.5"]),
    ("pretrain: --stain-jitter -0.1", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none",
                                       "--stain-jitter", "-0.1"]),
    ("pretrain: --zoom 1", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--zoom", "1"]),
    ("pretrain: --probe-every 0", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--probe-every",
                                   "0"]),
    ("pretrain: --keep best-probe without probe labels", ["pretrain", "{cells}", "--out", "{out}", "--weights",
                                                          "none", "--keep", "best-probe"]),
    ("pretrain: missing probe labels", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none", "--image-size",
                                        "32", "--batch-size", "4", "--probe-labels", "{world}/nope.csv"]),
    ("pretrain: probe labels without a label column", ["pretrain", "{cells}", "--out", "{out}", "--weights", "none",
                                                       "--image-size", "32", "--batch-size", "4", "--probe-labels",
                                                       "{bad}/probe_nolabel.csv"]),
    ("pretrain: --out is the probe folder", ["pretrain", "{cells}", "--out", "{cells2}", "--overwrite", "--weights",
                                             "none", "--probe-labels", "{cells2}"]),
    # ------------------------------------------------------------------ tsne
    ("tsne: neither store nor map", ["tsne", "--out", "{out}"]),
    ("tsne: --perplexity 0", ["tsne", "{store}", "--perplexity", "0", "--out", "{out}"]),
    ("tsne: --perplexity -1", ["tsne", "{store}", "--perplexity", "-1", "--out", "{out}"]),
    ("tsne: --n-iter -1", ["tsne", "{store}", "--n-iter", "-1", "--out", "{out}"]),
    ("tsne: --pca -1", ["tsne", "{store}", "--pca", "-1", "--out", "{out}"]),
    ("tsne: --n-jobs 0", ["tsne", "{store}", "--n-jobs", "0", "--out", "{out}"]),
    ("tsne: --out is the store", ["tsne", "{store}", "--out", "{store}", "--overwrite"]),
    ("tsne: unknown --color-by", ["tsne", "{store}", "--colour-by", "nope", "--out", "{out}"]),
    ("tsne: damaged store", ["tsne", "{bad}/store_dim", "--out", "{out}"]),
    ("tsne: missing map", ["tsne", "--map", "{world}/nope", "--query", "{store}", "--out", "{out}"]),
    ("tsne: --out exists", ["tsne", "{store}", "--out", "{world}/svm"]),
    # ------------------------------------------------------------------ gradcam
    ("gradcam: missing encoder", ["gradcam", "{world}/nope.keras", "{cells}/a/0.png", "--against", "{cells}/b/1.png",
                                  "--out", "{out}"]),
    ("gradcam: garbage encoder", ["gradcam", "{bad}/garbage.keras", "{cells}/a/0.png", "--against",
                                  "{cells}/b/1.png", "--out", "{out}"]),
    ("gradcam: missing image", ["gradcam", "{enc}", "{world}/nope.png", "--against", "{cells}/b/1.png",
                                "--out", "{out}"]),
    ("gradcam: bomb image", ["gradcam", "{enc}", "{bad}/bomb_dir/bomb.png", "--against", "{cells}/b/1.png",
                             "--out", "{out}"]),
    ("gradcam: text image", ["gradcam", "{enc}", "{bad}/text.png", "--against", "{cells}/b/1.png", "--out", "{out}"]),
    ("gradcam: three --against", ["gradcam", "{enc}", "{cells}/a/0.png", "--against", "{cells}/b/1.png", "--against",
                                  "{cells}/b/1.png", "--against", "{cells}/b/1.png", "--out", "{out}"]),
    ("gradcam: --model without --class", ["gradcam", "{enc}", "{cells}/a/0.png", "--model", "{world}/svm",
                                          "--out", "{out}"]),
    ("gradcam: damaged model", ["gradcam", "{enc}", "{cells}/a/0.png", "--model", "{bad}/svm_keys", "--class", "a",
                                "--out", "{out}"]),
    ("gradcam: unknown class", ["gradcam", "{enc}", "{cells}/a/0.png", "--model", "{world}/svm", "--class", "zebra",
                                "--out", "{out}"]),
    # ------------------------------------------------------------------ adapt
    ("adapt: missing source", ["adapt", "--source", "{world}/nope", "--target", "{cells}", "--out", "{out}"]),
    ("adapt: garbage source", ["adapt", "--source", "{bad}/garbage.keras", "--target", "{cells}", "--out", "{out}"]),
    ("adapt: missing target", ["adapt", "--source", "{enc}", "--target", "{world}/nope", "--out", "{out}"]),
    ("adapt: --shots 1", ["adapt", "--source", "{enc}", "--target", "{cells}", "--shots", "1", "--out", "{out}"]),
    ("adapt: --min-per-class 0", ["adapt", "--source", "{enc}", "--target", "{cells}", "--min-per-class", "0",
                                  "--out", "{out}"]),
    ("adapt: --lr abc", ["adapt", "--source", "{enc}", "--target", "{cells}", "--lr", "abc", "--out", "{out}"]),
    ("adapt: --cv -1", ["adapt", "--source", "{enc}", "--target", "{cells}", "--mode", "finetune", "--cv", "-1",
                        "--out", "{out}"]),
    ("adapt: missing class map", ["adapt", "--source", "{enc}", "--target", "{cells}", "--class-map",
                                  "{world}/nope.csv", "--out", "{out}"]),
    ("adapt: --out exists", ["adapt", "--source", "{enc}", "--target", "{cells}", "--out", "{world}/svm"]),
    ("adapt: --out is the target folder", ["adapt", "--source", "{enc}", "--target", "{cells}", "--out", "{cells}",
                                           "--overwrite"]),
    # ------------------------------------------------------------------ active-learn
    ("active-learn: no mode", ["active-learn", "{store}"]),
    ("active-learn: two modes", ["active-learn", "{store}", "--query", "--status", "--session", "{session}"]),
    ("active-learn: --simulate without labels", ["active-learn", "{store}", "--simulate", "--out", "{out}"]),
    ("active-learn: --query --batch 0", ["active-learn", "{store}", "--session", "{session}", "--query", "--batch",
                                         "0", "--overwrite"]),
    ("active-learn: --batch -5 new session", ["active-learn", "{store}", "--session", "{out}", "--query",
                                              "--batch", "-5", "--classes", "a,b"]),
    ("active-learn: --C 0", ["active-learn", "{store}", "--simulate", "--labels", "{world}/labels.csv", "--C", "0",
                             "--out", "{out}"]),
    ("active-learn: --C inf", ["active-learn", "{store}", "--simulate", "--labels", "{world}/labels.csv", "--C",
                               "inf", "--out", "{out}"]),
    ("active-learn: --out is the store", ["active-learn", "{store}", "--simulate", "--labels",
                                          "{world}/labels.csv", "--out", "{store}", "--overwrite"]),
    ("active-learn: --max-labels -5", ["active-learn", "{store}", "--simulate", "--labels", "{world}/labels.csv",
                                       "--max-labels", "-5", "--out", "{out}"]),
    ("active-learn: --test-fraction 0", ["active-learn", "{store}", "--simulate", "--labels", "{world}/labels.csv",
                                         "--test-fraction", "0", "--out", "{out}"]),
    ("active-learn: unknown strategy", ["active-learn", "{store}", "--simulate", "--labels", "{world}/labels.csv",
                                        "--strategy", "nope", "--out", "{out}"]),
    ("active-learn: --status without a session", ["active-learn", "{store}", "--session", "{out}", "--status"]),
    ("active-learn: session on another store", ["active-learn", "{world}/store2", "--session", "{session}",
                                                "--status"]),
    ("active-learn: teach on another store", ["active-learn", "{world}/store2", "--session", "{session}", "--teach",
                                              "{world}/filled.csv"]),
    ("active-learn: teach a missing file", ["active-learn", "{store}", "--session", "{session}", "--teach",
                                            "{world}/nope.csv"]),
    ("active-learn: teach unknown paths", ["active-learn", "{store}", "--session", "{session}", "--teach",
                                           "{bad}/teach_unknown.csv"]),
    ("active-learn: teach unknown label", ["active-learn", "{store}", "--session", "{session}", "--teach",
                                           "{bad}/teach_label.csv"]),
    ("active-learn: damaged session.json", ["active-learn", "{store}", "--session", "{bad}/session_list",
                                            "--status"]),
    # ------------------------------------------------------------------ probe
    ("probe: missing encoder", ["probe", "{world}/nope.keras", "{cells}"]),
    ("probe: garbage encoder", ["probe", "{bad}/garbage.keras", "{cells}"]),
    ("probe: missing images", ["probe", "{enc}", "{world}/nope"]),
    ("probe: --repeats 0", ["probe", "{enc}", "{cells}", "--repeats", "0"]),
    ("probe: --test-fraction 0", ["probe", "{enc}", "{cells}", "--test-fraction", "0"]),
    ("probe: --test-fraction 1", ["probe", "{enc}", "{cells}", "--test-fraction", "1"]),
    ("probe: --pixel-side 0", ["probe", "{enc}", "{cells}", "--pixel-side", "0"]),
    ("probe: --pixel-side 100000", ["probe", "{enc}", "{cells}", "--pixel-side", "100000"]),
    ("probe: unknown column", ["probe", "{enc}", "{cells}", "--column", "nope"]),
    ("probe: labels of other images", ["probe", "{enc}", "{cells}", "--labels", "{bad}/labels_unknown.csv"]),
    ("probe: only a bomb", ["probe", "{enc}", "{bad}/bomb_dir"]),
    ("probe: --out is the image folder", ["probe", "{enc}", "{cells}", "--out", "{cells}", "--overwrite"]),
    ("probe: --out exists", ["probe", "{enc}", "{cells}", "--out", "{world}/svm"]),
    # ------------------------------------------------------------------ serve (must refuse before serving)
    ("serve: missing store", ["serve", "--store", "{world}/nope", "--model", "{world}/svm", "--data", "{out}"]),
    ("serve: damaged store", ["serve", "--store", "{bad}/store_dim", "--model", "{world}/svm", "--data", "{out}"]),
    ("serve: missing model", ["serve", "--store", "{store}", "--model", "{world}/nope", "--data", "{out}"]),
    ("serve: model.json a list", ["serve", "--store", "{store}", "--model", "{bad}/svm_list", "--data", "{out}"]),
    ("serve: model of another store", ["serve", "--store", "{world}/store2", "--model", "{world}/svm", "--data",
                                       "{out}"]),
    ("serve: wrong encoder", ["serve", "--store", "{store}", "--model", "{world}/svm", "--encoder",
                              "{world}/wrong.keras", "--data", "{out}"]),
    ("serve: encoder reference whose source changed", ["serve", "--store", "{store}", "--model", "{world}/svm",
                                                       "--encoder", "{bad}/changed/encoder.json", "--data", "{out}"]),
    ("serve: open host without token", ["serve", "--store", "{store}", "--model", "{world}/svm", "--host", "0.0.0.0",
                                        "--data", "{out}"]),
    ("serve: short token", ["serve", "--store", "{store}", "--model", "{world}/svm", "--token", "abc", "--data",
                            "{out}"]),
    ("serve: -k 0", ["serve", "--store", "{store}", "--model", "{world}/svm", "-k", "0", "--data", "{out}"]),
    ("serve: --port -1", ["serve", "--store", "{store}", "--model", "{world}/svm", "--port", "-1", "--data", "{out}"]),
    ("serve: --port 70000", ["serve", "--store", "{store}", "--model", "{world}/svm", "--port", "70000", "--data",
                             "{out}"]),
    ("serve: --max-pixels 10", ["serve", "--store", "{store}", "--model", "{world}/svm", "--max-pixels", "10",
                                "--data", "{out}"]),
    ("serve: --max-request-mb 0", ["serve", "--store", "{store}", "--model", "{world}/svm", "--max-request-mb", "0",
                                   "--data", "{out}"]),
    ("serve: missing map", ["serve", "--store", "{store}", "--model", "{world}/svm", "--map", "{world}/nope",
                            "--data", "{out}"]),
]


# Rows run with no room to write any file (RLIMIT_FSIZE 0: every write fails with EFBIG, as a full disk
# fails with ENOSPC); what they had written before failing may stay in {out}, nothing else may change.
FULL_DISK_ROWS: list[tuple[str, list[str]]] = [
    ("full disk: check --out", ["check", "{cells}", "--out", "{out}/rejects.csv"]),
    ("full disk: demo-data", ["demo-data", "{out}", "--n-per-class", "1", "--sites", "1"]),
    ("full disk: colour-reference", ["colour-reference", "{cells}", "--out", "{out}/ref.json"]),
    ("full disk: normalize", ["normalize", "{cells}", "--method", "grayworld", "--out", "{out}"]),
    ("full disk: embed", ["embed", "{enc}", "{cells}", "--store", "{out}"]),
    ("full disk: fit-svm", ["fit-svm", "{store}", "--labels", "{world}/labels.csv", "--cv", "0", "--bootstrap", "10",
                            "--out", "{out}"]),
    ("full disk: predict", ["predict", "{world}/svm", "--store", "{store}", "--out", "{out}/p.csv"]),
    ("full disk: neighbours --out", ["neighbours", "{store}", "--path", "{first}", "--out", "{out}/nn.csv"]),
    ("full disk: tsne", ["tsne", "{store}", "--perplexity", "3", "--n-iter", "50", "--out", "{out}"]),
    ("full disk: session query", ["active-learn", "{store}", "--session", "{session}", "--query", "--batch", "2",
                                  "--overwrite"]),
    ("full disk: session teach", ["active-learn", "{store}", "--session", "{session}", "--teach",
                                  "{world}/filled.csv"]),
]


def _no_room() -> None:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _run(args: list[str], cwd: Path, timeout: float = 300, full_disk: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HEMOEMBED_DEBUG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "hemoembed", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**env, "PYTHONPATH": str(REPO)},
                          preexec_fn=_no_room if full_disk else None)


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file (link targets for links), by relative path; lock files are bookkeeping."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file() and path.name != ".lock":
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _cells(folder: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        target = folder / "ab"[i % 2] / f"{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(target)


def _damaged_store(source: Path, target: Path, damage: str) -> None:
    import pyarrow.parquet as pq

    shutil.copytree(source, target)
    header = json.loads((target / "store.json").read_text())
    if damage == "dim":
        header["dim"] = 640  # parts hold 1280: the reader used to reshape them into twice the rows
    elif damage == "list":
        header["dim"] = [1280]
    elif damage == "future":
        header["format_version"] = 99
    elif damage == "notjson":
        (target / "store.json").write_text("{not json")
        return
    elif damage in ("narrow", "nocol"):
        table = pq.read_table(target / "part-00000.parquet")
        if damage == "nocol":
            table = table.drop(["embedding"])
        else:
            import pyarrow as pa

            narrow = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, 1280)[:, :7]
            table = table.set_column(table.column_names.index("embedding"), "embedding",
                                     pa.FixedSizeListArray.from_arrays(pa.array(narrow.reshape(-1)), 7))
        pq.write_table(table, target / "part-00001.parquet")
    (target / "store.json").write_text(json.dumps(header))


@pytest.fixture(scope="session")
def world(tmp_path_factory, png_bomb) -> Path:
    """Real artefacts every row may read; built once for all workers (~40 s), never changed by a row (each
    runs on a linked copy)."""
    return built_once(tmp_path_factory, "hostile-world", lambda root: _build_world(root, png_bomb))


def _build_world(root: Path, png_bomb) -> None:
    import keras

    from hemoembed.data.colour import ReinhardReference
    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.adapted import adapted_encoder, save_encoder_reference
    from hemoembed.model.encoder import build_encoder, load_encoder, save_encoder
    from hemoembed.store.embed import embed_to_store
    from hemoembed.tasks.svm import EmbeddingSVM

    _cells(root / "cells", 12, seed=0)
    _cells(root / "cells2", 6, seed=1)
    _cells(root / "nest" / "cells", 2, seed=2)
    scanned = load_manifest(root / "cells")  # the same images as a CSV manifest in the world's root
    (root / "cells.csv").write_text("path,label\n" + "".join(f"cells/{p},{c}\n" for p, c in
                                                           zip(scanned.paths, scanned.labels)))
    keras.utils.set_random_seed(0)
    encoder = build_encoder(PreprocessingRecord(image_size=32), "none")
    save_encoder(encoder, root / "enc.keras")
    wrong = build_encoder(PreprocessingRecord(32, 0.3, "grayworld"), "none")
    wrong.set_weights(encoder.get_weights())
    save_encoder(wrong, root / "wrong.keras")
    store, _ = embed_to_store(encoder, load_manifest(root / "cells"), root / "store")
    embed_to_store(encoder, load_manifest(root / "cells2"), root / "store2")
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{p},{p[0]}\n" for p in store.paths))
    EmbeddingSVM().fit(store.embeddings(), [p[0] for p in store.paths]).save(
        root / "svm" / "label", fingerprint=store.fingerprint, column="label")
    (root / "ref.json").write_text('{"mean": [50.0, 0.0, 0.0], "std": [10.0, 1.0, 1.0]}\n')
    made = _run(["active-learn", str(root / "store"), "--session", str(root / "session"), "--query", "--batch", "4",
                 "--classes", "a,b"], root)
    assert made.returncode == 0, made.stderr
    query = (root / "session" / "to_label.csv").read_text().splitlines()
    (root / "filled.csv").write_text("\n".join([query[0]] + [row + row.split(",")[0][0] for row in query[1:]]) + "\n")

    bad = root / "bad"
    (bad / "empty_dir").mkdir(parents=True)
    (bad / "bomb_dir").mkdir()
    (bad / "bomb_dir" / "bomb.png").write_bytes(png_bomb(8000))
    (bad / "text_dir").mkdir()
    (bad / "text_dir" / "cell.png").write_text("not an image")
    (bad / "text.png").write_text("not an image")
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(bad / "tiny.png")
    (bad / "link_out").mkdir()
    (bad / "link_out" / "a.png").symlink_to(root / "cells" / "a" / "1.png")
    (bad / "nopath.csv").write_text("file,label\na/1.png,a\n")
    (bad / "ragged.csv").write_text("path,label\na/1.png,a,extra\n")
    (bad / "nul.csv").write_bytes(b"path\na/1\x00.png\n")
    (bad / "latin1.csv").write_bytes(b"path\n\xe9.png\n")
    (bad / "header_only.csv").write_text("path,label\n")
    (bad / "dupcols.csv").write_text("path,path\na.png,b.png\n")
    (bad / "outside.csv").write_text("path\n../cells/a/1.png\n")
    (bad / "garbage.keras").write_text("not a keras file")
    (bad / "garbage.json").write_text("{not json")
    (bad / "list.json").write_text("[1, 2]")
    (bad / "unknown_key.json").write_text('{"frobnicate": 1}')
    (bad / "negative_std.json").write_text('{"mean": [50.0, 0.0, 0.0], "std": [-1.0, 1.0, 1.0]}')
    (bad / "probe_nolabel.csv").write_text("path\na/0.png\nb/1.png\n")  # relative to {cells}
    (bad / "labels_unknown.csv").write_text("path,label\nx/none.png,a\ny/none.png,b\n")
    (bad / "teach_unknown.csv").write_text("path,label\nx/none.png,a\n")
    (bad / "teach_label.csv").write_text(f"path,label\n{store.paths[0]},zebra\n")
    for name, replacement in (("orphan", None), ("changed", root / "wrong.keras")):  # adapter encoder references
        (bad / name).mkdir()
        shutil.copy(root / "enc.keras", bad / name / "src.keras")
        style = ReinhardReference((4.0, 0.0, 0.0), (0.5, 0.05, 0.03))
        adapted = adapted_encoder(*load_encoder(bad / name / "src.keras"), style)[0]
        save_encoder_reference(adapted, bad / name / "src.keras", bad / name / "encoder.json")
        (bad / name / "src.keras").unlink()
        if replacement is not None:
            shutil.copy(replacement, bad / name / "src.keras")
    for damage in ("dim", "list", "future", "notjson", "narrow", "nocol"):
        _damaged_store(root / "store", bad / f"store_{damage}", damage)
    meta = json.loads((root / "svm" / "label" / "model.json").read_text())
    for name, text in (("svm_keys", json.dumps({k: v for k, v in meta.items() if k not in ("classes", "solver")})),
                       ("svm_list", "[]"), ("svm_classes", json.dumps({**meta, "classes": "ab"}))):
        shutil.copytree(root / "svm" / "label", bad / name)
        (bad / name / "model.json").write_text(text)
    shutil.copytree(root / "svm" / "label", bad / "svm_skops")
    (bad / "svm_skops" / "model.skops").write_bytes(b"PK\x03\x04 garbage")
    shutil.copytree(root / "session", bad / "session_list")
    (bad / "session_list" / "session.json").write_text("[]")


def _placeholders(copy: Path, tmp: Path) -> dict[str, str]:
    first = (copy / "labels.csv").read_text().splitlines()[1].split(",")[0]  # a stored path
    return {"world": str(copy), "bad": str(copy / "bad"), "cells": str(copy / "cells"), "store": str(copy / "store"),
            "enc": str(copy / "enc.keras"), "session": str(copy / "session"), "out": str(tmp / "out"),
            "cells2": str(copy / "cells2"),
            "first": first}


@pytest.fixture(scope="session")
def world_digest(world) -> dict[str, str]:
    """The world's :func:`_digest`, hashed once: every row's copy starts as hard links to these files."""
    return _digest(world)


def _hostile(world: Path, before: dict[str, str], tmp_path: Path, name: str, args: list[str],
             full_disk: bool = False) -> str:
    """Run one row on a linked copy of the world (``before``: its digest); returns the report (asserting exit
    2, one line, no traceback, nothing in the world changed)."""
    copy = tmp_path / "world"
    shutil.copytree(world, copy, symlinks=True, copy_function=os.link)  # hard links: cheap
    if full_disk:
        (tmp_path / "out").mkdir()
    argv = [a.format(**_placeholders(copy, tmp_path)) for a in args]
    result = _run(argv, cwd=tmp_path, timeout=60 if args[0] == "serve" else 300,  # a served row would block
                  full_disk=full_disk)
    report = f"{name}: exit {result.returncode}\nstdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr + result.stdout, report
    assert result.returncode == 2, report
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), report
    assert _digest(copy) == before, report
    return report


@pytest.mark.slow
@pytest.mark.parametrize("name,args", ROWS, ids=[name for name, _ in ROWS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(world, world_digest, tmp_path, name, args):
    report = _hostile(world, world_digest, tmp_path, name, args)
    out = tmp_path / "out"  # a refused command leaves no output behind either (an empty folder at most)
    assert not out.exists() or (out.is_dir() and not any(out.iterdir())), f"{report}\nleft {sorted(out.rglob('*'))}"


@pytest.mark.slow
@pytest.mark.parametrize("name,args", FULL_DISK_ROWS, ids=[name for name, _ in FULL_DISK_ROWS])
def test_a_full_disk_is_one_line_exit_2_and_changes_nothing(world, world_digest, tmp_path, name, args):
    _hostile(world, world_digest, tmp_path, name, args, full_disk=True)
    assert not [p for p in (tmp_path / "out").rglob(".*tmp*")], "temporary files left behind"


def test_every_command_has_rows():
    """A new command (or sub-command) fails here until hostile rows cover it."""
    import click

    from hemoembed.cli import main

    def leaves(group: click.Group, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        out = []
        for name, command in group.commands.items():
            if command.hidden:  # a deprecated spelling runs the command it names
                continue
            if isinstance(command, click.Group):
                out += leaves(command, (*prefix, name))
            else:
                out.append((*prefix, name))
        return out

    covered = {tuple(args[:2]) if args[0] == "store" else (args[0],) for _, args in ROWS}
    missing = [" ".join(c) for c in leaves(main, ()) if c not in covered]
    assert not missing, f"commands without hostile rows: {missing}"
    counts = {c: sum(1 for _, a in ROWS if a[0] == c[0]) for c in covered}
    assert min(counts.values()) >= 3, counts
