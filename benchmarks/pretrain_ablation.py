"""Choose the from-scratch pretraining recipe by measurement: each lever on and off at equal CPU budget.

Every row pretrains the encoder from random weights with ``hemoembed pretrain`` (a real subprocess, the
product's code) on the same seeded subset of PBC images, then embeds the subset with the trained encoder
and scores a linear probe on a fixed stratified 75/25 split (the same split for every row and for the
raw-pixel and random-encoder baselines). Rows are resumable: a finished row is read back from its
``results.json`` (embeddings are kept as ``OUT/ROW_sSEED_emb.npy``); an interrupted one continues with
``--resume``.

    python benchmarks/pretrain_ablation.py /work/shared/data/pbc256/PBC_dataset_normal_DIB \\
        --out /work/runs/ablation --rows old_scratch,candidate --seeds 0,1

Prints one JSON object per row (and the baselines) and writes ``OUT/results.json``. The linear probe is the
same for every representation: PCA to 256 dimensions, standardisation, logistic regression with C chosen
by 3-fold CV on the training part (on the full 1280 dimensions lbfgs needs 500–1,000 iterations and
2–3 CPU minutes per fit on these ill-conditioned embeddings, for the same macro-F1 within 0.01); 95 % intervals are
percentiles of 1,000 bootstrap resamples of the test part; ``paired`` compares a row with ``--reference``
on the same test images (bootstrap of the macro-F1 difference, same seed).

Two further uses, for changes outside the recipe (e.g. a new preprocessing record version):
``--reembed ENCODER --reembed-versions 1,2`` probes the same trained weights embedded with each record
version (rows ``FOLDER/RUN@recN``), and ``--compare-with DIR`` brings another ablation folder's rows into the
table as ``DIR/ROW`` (name them in ``--against`` for paired columns), after checking that its subset CSV is
this run's byte for byte, so both folders probe the same split and the same test cells.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

# Settings that have no option of their own go in a config file: OUT/NAME.json, named "{NAME}" in a row.
CONFIG_FILES = {"paper_translation": {"augment": {"translation": 0.09}}, "record_v1": {"record_version": 1},
                "no_dropout": {"dropout": 0.0}, "dropout0.4": {"dropout": 0.4}, "dropout0.5": {"dropout": 0.5}}
# Every row embeds with the plain encoder, as every row did before --view-average, unless it says otherwise.
BASE = ["--weights", "none", "--image-size", "64", "--epochs", "4", "--cache", "--val-fraction", "0.05",
        "--view-average", "none"]
# The "today's scratch preset" row, spelled out so later preset changes do not move it.
OLD_SCRATCH = ["--loss", "semihard", "--head", "none", "--batch-size", "100", "--lr", "1e-3", "--warmup-epochs", "1",
               "--crop-scale", "none", "--zoom", "0.1", "--hue", "0.2", "--colour-jitter", "0.2",
               "--stain-jitter", "0", "--config", "{paper_translation}"]
CANDIDATE = ["--loss", "ntxent", "--head", "mlp:512,128", "--batch-size", "128", "--lr", "1e-3",
             "--lr-decay", "constant", "--warmup-epochs", "0", "--crop-scale", "0.3,1", "--zoom", "0", "--hue", "0.05",
             "--colour-jitter", "0.3", "--stain-jitter", "0"]


def _with(base: list[str], **changes: str) -> list[str]:
    """``base`` with the value after each ``--option`` replaced (or appended)."""
    args = list(base)
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


STAIN = _with(CANDIDATE, hue="0", stain_jitter="0.05")  # the scratch preset's colour jitter since 2026-12-02
ROWS: dict[str, list[str]] = {
    "old_scratch": OLD_SCRATCH,
    "candidate": CANDIDATE,
    "cand_no_head": _with(CANDIDATE, head="none"),
    "cand_no_crop": _with(CANDIDATE, crop_scale="none", zoom="0.1", config="{paper_translation}"),
    "cand_semihard": _with(CANDIDATE, loss="semihard"),
    "cand_semihard_no_head": _with(CANDIDATE, loss="semihard", head="none"),
    "cand_hue0.2": _with(CANDIDATE, hue="0.2", colour_jitter="0.2"),
    "cand_hue0": _with(CANDIDATE, hue="0"),
    "cand_stain": STAIN,
    "cand_stain_dihedral": _with(STAIN, view_average="dihedral"),  # the scratch preset since --view-average
    "cand_tau0.1": _with(CANDIDATE, temperature="0.1"),
    "cand_tau0.5": _with(CANDIDATE, temperature="0.5"),
    "cand_lr3e-3": _with(CANDIDATE, lr="3e-3"),
    "cand_lr3e-4": _with(CANDIDATE, lr="3e-4"),
    "cand_batch256": _with(CANDIDATE, batch_size="256"),
    "cand_batch64": _with(CANDIDATE, batch_size="64"),
    "cand_batch32": _with(CANDIDATE, batch_size="32"),
    "cand_crop0.08": _with(CANDIDATE, crop_scale="0.08,1"),
    "cand_crop0.5": _with(CANDIDATE, crop_scale="0.5,1"),
    "cand_48px_7ep": _with(CANDIDATE, image_size="48", epochs="7"),
    "cand_96px_2ep": _with(CANDIDATE, image_size="96", epochs="2"),
    "cand_wd": _with(CANDIDATE, weight_decay="1e-4"),
    "cand_dropout0": _with(CANDIDATE, config="{no_dropout}"),  # no dropout on the pooled 1280-d features
    "cand_droppath0": _with(CANDIDATE, drop_path="0"),  # no stochastic depth in the backbone
    "cand_noreg": _with(CANDIDATE, drop_path="0", config="{no_dropout}"),  # neither
    "cand_dropout0.4": _with(CANDIDATE, config="{dropout0.4}"),  # more dropout on the pooled features (default 0.2)
    "cand_dropout0.5": _with(CANDIDATE, config="{dropout0.5}"),
    "cand_warmup_cosine": _with(CANDIDATE, lr_decay="cosine", warmup_epochs="1"),
    "cand_cos_nowarm": _with(CANDIDATE, lr_decay="cosine"),
    "cand_cooldown0.25": _with(CANDIDATE, cooldown="0.25"),  # constant, then linear to 0 over the last epoch
    "cand_cooldown0.5": _with(CANDIDATE, cooldown="0.5"),
    "cand_semihard_tuned": _with(CANDIDATE, loss="semihard", head="none", lr="3e-3"),
    # The candidate trained and embedded with preprocessing record version 1 (before #18; version 2 is the default).
    "cand_rec1": _with(CANDIDATE, config="{record_v1}"),
    "cand_views4": _with(CANDIDATE, views="4"),  # four views of every image: three positives per anchor, 2x compute
    "cand_views3": _with(CANDIDATE, views="3"),
    "cand_8ep": _with(CANDIDATE, epochs="8"),  # two views, twice the epochs: cand_views4's compute
    "cand_stain_views4": _with(STAIN, views="4"),
    "cand_stain_batch64": _with(STAIN, batch_size="64"),
    "cand_stain_8ep": _with(STAIN, epochs="8"),
    "cand_stain0.1": _with(STAIN, stain_jitter="0.1"),  # stronger stain jitter
    "cand_stain0.2": _with(STAIN, stain_jitter="0.2"),  # Tellez et al.'s "HED-strong"
    "cand_stain_cj0.1": _with(STAIN, colour_jitter="0.1"),  # less brightness/contrast/saturation jitter
    "cand_stain_dcl": _with(STAIN, loss="dcl"),  # decoupled contrastive loss (positives out of the denominator)
    "cand_stain_dcl_tau0.1": _with(STAIN, loss="dcl", temperature="0.1"),  # lightly's DCLLoss default
    # milder random-resized crops: each rescales a cell less, so apparent size (WBCAtt cell_size) survives more
    "cand_stain_crop0.5": _with(STAIN, crop_scale="0.5,1"),
    "cand_stain_crop0.7": _with(STAIN, crop_scale="0.7,1"),
}


def subset_manifest(root: Path, size: int, seed: int, out: Path) -> Path:
    """A seeded random subset of the class-per-folder tree under ``root`` as a CSV (path,label)."""
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    chosen = sorted(paths[i] for i in np.random.default_rng(seed).permutation(len(paths))[:size])
    target = out / f"subset{size}_seed{seed}.csv"
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([p, p.split("/")[0]] for p in chosen)
    return target


def pretrain_row(name: str, seed: int, args: list[str], manifest: Path, root: Path, out: Path) -> tuple[Path, float]:
    """Run (or resume, or reuse) one row's pretraining; returns the run folder and its CPU seconds."""
    run = out / f"{name}_s{seed}"
    timing = run / "cpu_seconds.json"
    if (run / "encoder.keras").is_file() and timing.is_file():
        return run, json.loads(timing.read_text())["cpu_seconds"]
    for file in CONFIG_FILES:
        args = [a.replace(f"{{{file}}}", str(out / f"{file}.json")) for a in args]
    command = [sys.executable, "-m", "hemoembed", "pretrain", str(manifest), "--image-root", str(root),
               "--out", str(run), *BASE, *args, "--seed", str(seed)]
    if (run / "config.json").is_file():
        command.append("--resume")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with open(out / f"{name}_s{seed}.log", "a") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True, env={**os.environ,
                       "TF_CPP_MIN_LOG_LEVEL": "3"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    previous = json.loads(timing.read_text())["cpu_seconds"] if timing.is_file() else 0.0
    timing.write_text(json.dumps({"cpu_seconds": previous + cpu, "wall_seconds": time.time() - start,
                                  "load_average": os.getloadavg()}) + "\n")
    return run, previous + cpu


def embed_paths(model, paths: list[str], record) -> np.ndarray:
    """Embeddings of ``paths`` through the product's inference path (decode, gray-world, crop, resize)."""
    from hemoembed.data.pipeline import inference_dataset

    rows = [np.asarray(model(images, training=False)) for images, _ in inference_dataset(paths, record, 128)]
    return np.concatenate(rows)


def raw_pixels(paths: list[str], side: int = 32, dihedral: bool = False) -> np.ndarray:
    """The raw-pixel floor: gray-world, central crop, ``side``-px images flattened (PCA is in the probe);
    ``dihedral``: each image averaged with its seven symmetric views (the pixels' own view averaging)."""
    from hemoembed.data.pipeline import inference_dataset
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.layers import DIHEDRAL, dihedral_views

    def flat(images) -> np.ndarray:
        if dihedral:  # the mean image of the eight views: symmetric, so invariant like an averaging encoder
            images = np.asarray(dihedral_views(images)).reshape((len(DIHEDRAL),) + tuple(images.shape)).mean(0)
        return np.asarray(images).reshape(len(images), -1) / 255.0

    record = PreprocessingRecord(side, 0.875, "grayworld")
    return np.concatenate([flat(images) for images, _ in inference_dataset(paths, record, 256)]).astype(np.float32)


def linear_probe(x: np.ndarray, y: np.ndarray, split: tuple[np.ndarray, np.ndarray], pca: int = 256) -> dict:
    """Macro-F1 on the test part of PCA → standardise → logistic regression (C by 3-fold CV on the train part)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = split
    steps = ([PCA(pca, random_state=0)] if pca else []) + [StandardScaler(), LogisticRegression(max_iter=2000)]
    search = GridSearchCV(make_pipeline(*steps), {"logisticregression__C": [0.01, 0.1, 1.0]}, cv=3,
                          scoring="f1_macro", n_jobs=1)
    search.fit(x[train], y[train])
    pred = search.predict(x[test])
    return {"macro_f1": float(f1_score(y[test], pred, average="macro")), "C": search.best_params_[
        "logisticregression__C"], "pred": pred}


def bootstrap(y: np.ndarray, pred: np.ndarray, other: np.ndarray | None = None, n: int = 1000) -> list[float]:
    """95 % percentile interval of macro-F1 (or of its difference from ``other``) over test resamples."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    values = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        value = f1_score(y[i], pred[i], average="macro")
        if other is not None:
            value -= f1_score(y[i], other[i], average="macro")
        values.append(value)
    return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]


def other_folder_rows(folder: Path, manifest: Path, n_test: int) -> dict:
    """The rows of the ablation in ``folder``, keyed ``FOLDER/ROW``; refused unless its subset CSV is
    ``manifest`` byte for byte (same images in the same order: the same split, the same test cells)."""
    theirs = folder / manifest.name
    if not theirs.is_file() or theirs.read_bytes() != manifest.read_bytes():
        raise SystemExit(f"{folder}: no {manifest.name} identical to {manifest}: a different subset, not comparable")
    results = json.loads((folder / "results.json").read_text())
    wrong = [key for key, value in results.items() if len(value["pred"]) != n_test]
    if wrong:
        raise SystemExit(f"{folder}/results.json: rows {', '.join(wrong)} do not hold {n_test} test predictions")
    return {f"{folder.name}/{key}": value for key, value in results.items()}


def table(results: dict, test_y: np.ndarray, against: tuple[str, ...] = ("candidate_s0", "old_scratch_s0")) -> str:
    """The rows as a Markdown table: macro-F1 with its interval, CPU minutes, the preprocessing record
    version embedded with ("–": not recorded), and the paired difference (with its interval) from each row in
    ``against`` on the same test cells."""
    head = "| row | macro-F1 [95 % CI] | CPU min | record | " + " | ".join(f"vs {a} [95 % CI]" for a in against)
    lines = [head + " |", "|" + "---|" * (4 + len(against))]
    for key, value in results.items():
        cells = [key, f"{value['macro_f1']:.3f} [{value['ci'][0]:.3f}, {value['ci'][1]:.3f}]",
                 str(value.get("cpu_minutes", "–")), str(value.get("record_version", "–"))]
        for other in against:
            if other == key or other not in results:
                cells.append("–")
                continue
            pred, ref = np.asarray(value["pred"]), np.asarray(results[other]["pred"])
            low, high = bootstrap(test_y, pred, ref)
            cells.append(f"{value['macro_f1'] - results[other]['macro_f1']:+.3f} [{low:+.3f}, {high:+.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="class-per-folder image tree (PBC_dataset_normal_DIB)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", default="old_scratch,candidate", help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--subset-seed", type=int, default=12)
    parser.add_argument("--reference", default="old_scratch", help="row the paired comparison is against")
    parser.add_argument("--reembed", type=Path, action="append", default=[], metavar="ENCODER",
                        help="a trained encoder.keras to embed again with each of --reembed-versions (repeatable)")
    parser.add_argument("--reembed-versions", default="1,2", help="preprocessing record versions for --reembed")
    parser.add_argument("--compare-with", type=Path, action="append", default=[], metavar="DIR",
                        help="another ablation folder on the same subset; its rows join the table as DIR/ROW")
    parser.add_argument("--against", default="candidate_s0,old_scratch_s0",
                        help="rows (DIR/ROW for --compare-with rows) the table's paired columns compare with")
    args = parser.parse_args()

    from sklearn.model_selection import train_test_split

    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.encoder import build_encoder, load_encoder

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, settings in CONFIG_FILES.items():
        (out / f"{name}.json").write_text(json.dumps(settings) + "\n")
    manifest = subset_manifest(args.root, args.size, args.subset_seed, out)
    with open(manifest) as handle:
        rows = list(csv.DictReader(handle))
    paths = [str(args.root / r["path"]) for r in rows]
    y = np.array([r["label"] for r in rows])
    split = tuple(map(np.asarray, train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=0)))
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    test_y = y[split[1]]

    def record(key: str, value: dict) -> None:
        if results_path.is_file():  # rows written meanwhile by another invocation on the same folder are kept
            results.update(json.loads(results_path.read_text()))
        results[key] = value
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({"row": key, **{k: v for k, v in value.items() if k != "pred"}}), flush=True)

    def probed(x: np.ndarray, version: int) -> dict:
        probe = linear_probe(x, y, split)
        return {**probe, "pred": probe["pred"].tolist(), "ci": bootstrap(test_y, probe["pred"]),
                "record_version": version}

    if "raw_pixels_pca256" not in results:
        record("raw_pixels_pca256", probed(raw_pixels(paths), PreprocessingRecord().version))
    if "random_encoder" not in results:
        rec = PreprocessingRecord(64, 0.875, "grayworld")
        record("random_encoder", probed(embed_paths(build_encoder(rec, "none"), paths, rec), rec.version))
    if "raw_pixels_dihedral" not in results:  # the baselines of an encoder that averages its dihedral views
        record("raw_pixels_dihedral", probed(raw_pixels(paths, dihedral=True), PreprocessingRecord().version))
    for seed in (0, 1):
        if f"random_encoder_dihedral_s{seed}" not in results:
            import keras

            keras.utils.set_random_seed(seed)
            rec = PreprocessingRecord(64, 0.875, "grayworld")
            model = build_encoder(rec, "none", view_average="dihedral")
            record(f"random_encoder_dihedral_s{seed}", probed(embed_paths(model, paths, rec), rec.version))
    for encoder in args.reembed:  # the same weights, each record version: what preprocessing alone changes
        model, rec = load_encoder(encoder)
        for version in (int(v) for v in args.reembed_versions.split(",")):
            key = f"{encoder.parent.parent.name}/{encoder.parent.name}@rec{version}"
            if key not in results:
                x = embed_paths(model, paths, replace(rec, version=version))
                np.save(out / f"{key.replace('/', '_')}_emb.npy", x)
                record(key, {**probed(x, version), "trained_record_version": rec.version})
    for name in filter(None, args.rows.split(",")):  # --rows "" only writes the table
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{name}_s{seed}"
            if key in results:
                continue
            try:
                run, cpu = pretrain_row(name, seed, ROWS[name], manifest, args.root, out)
            except subprocess.CalledProcessError as error:  # one failed row must not stop the others
                print(f"{key}: pretraining failed with exit code {error.returncode}; see {out / key}.log",
                      file=sys.stderr)
                continue
            model, rec = load_encoder(run / "encoder.keras")
            x = embed_paths(model, paths, rec)
            np.save(out / f"{key}_emb.npy", x)
            value = {**probed(x, rec.version), "cpu_minutes": round(cpu / 60, 1), "args": ROWS[name], "seed": seed}
            ref = results.get(f"{args.reference}_s{seed}")
            if ref is not None and name != args.reference:
                value["paired_diff_ci"] = bootstrap(test_y, np.asarray(value["pred"]), np.asarray(ref["pred"]))
                value["paired_diff"] = round(value["macro_f1"] - ref["macro_f1"], 4)
            record(key, value)
    against = tuple(filter(None, args.against.split(",")))
    others = {key: value for folder in args.compare_with
              for key, value in other_folder_rows(folder, manifest, len(test_y)).items() if key in against}
    (out / "table.md").write_text(table({**results, **others}, test_y, against))


if __name__ == "__main__":
    main()
