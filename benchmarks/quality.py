"""The embedding's worth, end to end: pretrain from scratch on all PBC, then every downstream figure.

One command reproduces the chain of issue 12 and writes ``OUT/quality.json`` and ``OUT/quality.md``:

1. ``pretrain``: ``hemoembed pretrain`` on all 17,092 PBC images (labels unused) with the ``scratch``
   preset, watched by a probe (250 labelled cells of the WBCAtt *training* split, never the test split);
2. ``embed``: PBC and BCCD with the trained encoder, and PBC with a random encoder of the same shape
   (``--no-random`` leaves the random encoder out of every step: its figures do not depend on the recipe);
3. ``wbcatt``: the WBCAtt official split (train + val → test), cell type and the 11 attributes, macro-F1
   for the trained encoder, the random encoder and raw pixels (32 px, PCA 256), same SVM for all three;
4. ``support``: the label-efficiency curve (``fit-svm --support``) on WBCAtt cell type;
5. ``active``: PBC 8-class active learning, uncertainty vs random (``active-learn --simulate``);
6. ``adapt``: the BCCD adapter ablation and shot curve (``benchmarks/adapt_bccd.py``);
7. ``tsne``: the t-SNE map of PBC by cell type.

Every step skips what a previous invocation finished (pretraining resumes with ``--resume``), so the
chain survives being stopped. CLI steps run as real subprocesses of this checkout.

    python benchmarks/quality.py --data ../shared/data --out /work/runs/quality --epochs 16
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
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from pretrain_ablation import bootstrap  # noqa: E402  (the paired interval of the ablation tables)

PIXELS = "raw pixels (32 px, PCA 256)"
ATTRIBUTES = ("cell_size", "cell_shape", "nucleus_shape", "nuclear_cytoplasmic_ratio", "chromatin_density",
              "cytoplasm_vacuole", "cytoplasm_texture", "cytoplasm_colour", "granule_type", "granule_colour",
              "granularity")
STEPS = ("pretrain", "embed", "wbcatt", "support", "active", "adapt", "tsne")


def hemoembed(*args: str, log: Path) -> float:
    """Run ``python -m hemoembed ARGS`` from this checkout; returns its CPU seconds. Fails loudly."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "a") as handle:
        handle.write(f"$ hemoembed {' '.join(map(str, args))}\n")
        handle.flush()
        subprocess.run([sys.executable, "-m", "hemoembed", *map(str, args)], cwd=REPO, stdout=handle,
                       stderr=subprocess.STDOUT, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def wbcatt_rows(data: Path, split: str) -> list[dict[str, str]]:
    with open(data / "wbcatt" / f"pbc_attr_v1_{split}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def probe_csv(data: Path, out: Path, per_class: int = 50, seed: int = 0) -> Path:
    """A small labelled probe set from the WBCAtt training split (paths relative to ``pbc256``)."""
    rows = wbcatt_rows(data, "train")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({r["label"] for r in rows}):
        members = [r for r in rows if r["label"] == label]
        chosen += [members[i] for i in rng.permutation(len(members))[:per_class]]
    path = out / "probe.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([r["path"], r["label"]] for r in chosen)
    return path


def raw_pixel_features(paths: list[str], size: int = 32) -> np.ndarray:
    """Gray-world, central crop, ``size``-px RGB flattened: the no-learning reference."""
    from hemoembed.data.pipeline import inference_dataset
    from hemoembed.data.preprocess import PreprocessingRecord

    record = PreprocessingRecord(size, 0.875, "grayworld")
    rows = [images.numpy().reshape(len(images), -1) / 255.0 for images, _ in inference_dataset(paths, record, 256)]
    return np.concatenate(rows).astype(np.float32)


def svm_scores(X_train, y_train, X_test, y_test, solver: str, seed: int = 0) -> dict:
    """Macro-F1 (with a 95 % bootstrap interval), accuracy and test predictions of the product's SVM on one
    column (the predictions pair encoders on the same test cells)."""
    from hemoembed.tasks.common import evaluate
    from hemoembed.tasks.svm import EmbeddingSVM

    model = EmbeddingSVM(solver, random_state=seed).fit(X_train, y_train)
    report = evaluate(list(y_test), model.predict_proba(X_test), model.classes_, n_bootstrap=200)
    return {"macro_f1": round(report["macro"]["f1"], 4),
            "ci": [round(v, 4) for v in report["bootstrap"]["macro_f1_ci"]], "accuracy": round(report["accuracy"], 4),
            "pred": [str(p) for p in model.predict(X_test)]}


def wbcatt_table(data: Path, stores: dict[str, Path], solver: str,
                 columns: tuple[str, ...] = ("label", *ATTRIBUTES)) -> dict:
    """Macro-F1 per WBCAtt column for each store and for raw pixels, the same SVM everywhere."""
    from sklearn.decomposition import PCA

    from hemoembed.store.store import EmbeddingStore

    splits = {"train": wbcatt_rows(data, "train") + wbcatt_rows(data, "val"), "test": wbcatt_rows(data, "test")}
    by_path = {r["path"]: r for rows in splits.values() for r in rows}
    keys = {part: [r["path"] for r in rows] for part, rows in splits.items()}
    features: dict[str, dict[str, np.ndarray]] = {}
    for name, store_dir in stores.items():
        store = EmbeddingStore.open(store_dir)
        features[name] = {}
        for part in splits:
            csv_path = out_csv = data / "wbcatt" / f"pbc_attr_v1_{part}.csv"
            X, _, got = store.labelled(str(csv_path), "label", return_keys=True)
            if part == "train":  # train + val, in the order of ``keys``
                X_val, _, got_val = store.labelled(str(data / "wbcatt" / "pbc_attr_v1_val.csv"), "label",
                                                   return_keys=True)
                X, got = np.concatenate([X, X_val]), got + got_val
            index = {k: i for i, k in enumerate(got)}
            missing = [k for k in keys[part] if k not in index]
            if missing:
                raise SystemExit(f"{store_dir}: {len(missing)} WBCAtt images not embedded (e.g. {missing[0]}; "
                                 f"{out_csv})")
            features[name][part] = X[[index[k] for k in keys[part]]]
    root = data / "pbc256"
    pixels = {part: raw_pixel_features([str(root / k) for k in keys[part]]) for part in splits}
    pca = PCA(256, random_state=0).fit(pixels["train"])
    features[PIXELS] = {part: pca.transform(pixels[part]) for part in splits}
    table: dict[str, dict] = {}
    first = next(iter(stores))  # the trained encoder: every other store is paired against it
    for column in columns:
        y = {part: np.array([by_path[k][column].strip() for k in keys[part]]) for part in splits}
        keep = {part: y[part] != "" for part in splits}
        table[column] = {name: svm_scores(f["train"][keep["train"]], y["train"][keep["train"]],
                                          f["test"][keep["test"]], y["test"][keep["test"]], solver)
                         for name, f in features.items()}
        truth = y["test"][keep["test"]]
        for name, scores in table[column].items():  # paired on the same test cells: raw pixels, first encoder
            pred = np.asarray(scores["pred"])
            scores["vs"] = {other: bootstrap(truth, pred, np.asarray(table[column][other]["pred"]))
                            for other in (PIXELS, first) if other != name}
        print(json.dumps({"wbcatt": column, **{k: v["macro_f1"] for k, v in table[column].items()}}), flush=True)
    if not set(ATTRIBUTES) <= set(columns):
        return {"solver": solver, "columns": table}
    means = {name: round(float(np.mean([table[c][name]["macro_f1"] for c in ATTRIBUTES])), 4) for name in features}
    return {"solver": solver, "columns": table, "mean_attribute_macro_f1": means}


def support_curve(out_dir: Path) -> dict:
    """Mean macro-F1 over repeats per support size from ``fit-svm --support`` (label column)."""
    path = next(out_dir.rglob("learning_curve.csv"))
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_size: dict[str, list[float]] = {}
    for row in rows:  # labels per class ("all" for every label) and the labels that makes in total
        by_size.setdefault(f"{row['per_class']} per class ({row['n_labels']} labels)", []).append(
            float(row["macro_f1"]))
    return {size: round(float(np.mean(values)), 4) for size, values in by_size.items()}


def active_summary(out_dir: Path) -> dict:
    """Per strategy: the labels (and share of the pool) from which the mean curve stays within the
    tolerance of the all-label F1, as ``active-learn`` itself computed them (``analysis.json``)."""
    analysis = json.loads((out_dir / "analysis.json").read_text())
    with open(out_dir / "results.csv", newline="") as handle:
        pool = max(int(row["n_labels"]) for row in csv.DictReader(handle))
    return {"all_label_macro_f1": round(analysis["full_label_macro_f1"], 4), "pool": pool,
            "tolerance": analysis["tolerance"],
            **{strategy: {"labels_within": n, "share_of_pool": None if n is None else round(n / pool, 4)}
               for strategy, n in analysis["labels_needed"].items()},  # None: not within it where the curve stops
            "rate_test_p": analysis.get("rate_test_uncertainty_vs_random", {}).get("p_value")}


def markdown(result: dict) -> str:
    """The chain's tables for RESULTS.md: WBCAtt macro-F1 per column and representation, then the rest."""
    lines = []
    if "pretrain" in result:
        lines += [f"Pretraining: {result['pretrain']['cpu_seconds'] / 60:.1f} CPU minutes "
                  f"(`{' '.join(result['pretrain']['options'])}`).", ""]
    if "wbcatt" in result:
        table = result["wbcatt"]["columns"]
        names = list(next(iter(table.values())))
        # paired differences (same test cells), where recorded: each learned store against raw pixels, and
        # every other store against the first (the trained encoder)
        recorded = next(iter(table.values()))
        pairs = [(n, o) for n in names for o in (PIXELS, names[0]) if o != n and o in recorded[n].get("vs", {})
                 and not (n == PIXELS and o == names[0])]
        lines += ["| column | " + " | ".join(names + [f"{n} − {o}" for n, o in pairs]) + " |",
                  "|---|" + "---|" * (len(names) + len(pairs))]
        for column, row in table.items():
            cells = [f"{row[n]['macro_f1']:.3f} [{row[n]['ci'][0]:.3f}, {row[n]['ci'][1]:.3f}]" for n in names]
            cells += [f"{row[n]['macro_f1'] - row[o]['macro_f1']:+.3f} [{row[n]['vs'][o][0]:+.3f}, "
                      f"{row[n]['vs'][o][1]:+.3f}]" for n, o in pairs]
            lines.append(f"| {column} | " + " | ".join(cells) + " |")
        means = result["wbcatt"].get("mean_attribute_macro_f1")
        if means is not None:
            lines += ["| **mean of the 11 attributes** | " + " | ".join(f"**{means[n]:.3f}**" for n in names)
                      + " |" * (len(pairs) + 1), ""]
    for key in ("support", "active", "adapt"):
        if key in result:
            lines += [f"{key}: `{json.dumps(result[key])}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--encoder", type=Path, default=None, help="skip pretraining: use this encoder")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--pretrain-options", default="", help="extra pretrain options, space-separated")
    parser.add_argument("--solver", default="liblinear", help="the SVM solver of every table (fit-svm's default)")
    parser.add_argument("--al-repeats", type=int, default=3)
    parser.add_argument("--al-max-labels", type=int, default=0,
                        help="stop each active-learning curve at this many labels (0: the whole pool)")
    parser.add_argument("--adapt-repeats", type=int, default=10)
    parser.add_argument("--also", action="append", default=[], metavar="NAME=ENCODER",
                        help="another encoder embedded and scored beside the trained one in the WBCAtt table "
                             "(repeatable; paired differences against the trained one)")
    parser.add_argument("--wbcatt-columns", default=",".join(("label", *ATTRIBUTES)),
                        help="the WBCAtt columns to score (the attribute mean needs all 11)")
    parser.add_argument("--no-random", action="store_true",
                        help="leave the random encoder out (its columns do not depend on the pretraining recipe)")
    args = parser.parse_args()
    also = dict(item.split("=", 1) for item in args.also if "=" in item)
    taken = {"pbc", "pbc_random", "bccd", "trained encoder", "random encoder"}  # the chain's own stores
    if len(also) != len(args.also) or not set(also).isdisjoint(taken):
        parser.error(f"--also {' '.join(args.also)}: each must be NAME=ENCODER with a NAME of its own "
                     "(not pbc, pbc_random, bccd, trained encoder, random encoder or another --also's)")
    missing = [path for path in also.values() if not Path(path).is_file()]
    if missing:
        parser.error(f"--also: no encoder file {missing[0]}")
    columns = tuple(args.wbcatt_columns.split(","))
    if not set(columns) <= {"label", *ATTRIBUTES}:
        parser.error(f"--wbcatt-columns {args.wbcatt_columns}: each must be label or one of {', '.join(ATTRIBUTES)}")

    data, out = args.data.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    steps = set(args.steps.split(","))
    result_path = out / "quality.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}

    def save(key: str, value) -> None:
        result[key] = value
        result_path.write_text(json.dumps(result, indent=1) + "\n")

    run = out / "run"
    encoder = args.encoder or run / "encoder.keras"
    if "pretrain" in steps and args.encoder is None and not encoder.is_file():
        options = ["--weights", "none", "--image-size", str(args.image_size), "--epochs", str(args.epochs),
                   "--cache", "--probe-labels", str(probe_csv(data, out)), *args.pretrain_options.split()]
        resume = ["--resume"] if (run / "config.json").is_file() else []
        start = time.time()
        cpu = hemoembed("pretrain", data / "pbc256", "--out", run, *options, *resume, log=log)
        save("pretrain", {"cpu_seconds": round(cpu + result.get("pretrain", {}).get("cpu_seconds", 0), 1),
                          "wall_seconds_last_invocation": round(time.time() - start, 1),
                          "load_average": os.getloadavg(), "options": options})
    stores = {"trained encoder": out / "stores" / "pbc", "random encoder": out / "stores" / "pbc_random"}
    if args.no_random:
        del stores["random encoder"]
    stores.update({name: out / "stores" / name for name in also})
    if "embed" in steps:
        if not (stores["trained encoder"] / "store.json").is_file():
            hemoembed("embed", encoder, data / "pbc256", "--store", stores["trained encoder"], log=log)
        if not (out / "stores" / "bccd" / "store.json").is_file():
            hemoembed("embed", encoder, data / "bccd", "--store", out / "stores" / "bccd", log=log)
        for name, path in also.items():
            if not (stores[name] / "store.json").is_file():
                hemoembed("embed", path, data / "pbc256", "--store", stores[name], log=log)
        if "random encoder" in stores and not (stores["random encoder"] / "store.json").is_file():
            from hemoembed.model.encoder import build_encoder, load_encoder, save_encoder, view_average_of

            trained, record = load_encoder(encoder)  # the same shape, view averaging included
            random_path = out / "random_encoder.keras"
            save_encoder(build_encoder(record, "none", view_average=view_average_of(trained)), random_path)
            hemoembed("embed", random_path, data / "pbc256", "--store", stores["random encoder"], log=log)
    if "wbcatt" in steps and "wbcatt" not in result:
        save("wbcatt", wbcatt_table(data, stores, args.solver, columns))
    w = data / "wbcatt"
    if "support" in steps and "support" not in result:
        curves = {}
        for name, store in stores.items():
            target = out / "support" / name.split()[0]
            if not target.is_dir():
                hemoembed("fit-svm", store, "--labels", w / "pbc_attr_v1_train.csv", "--labels",
                          w / "pbc_attr_v1_val.csv", "--test", w / "pbc_attr_v1_test.csv", "--columns", "label",
                          "--cv", "0", "--solver", args.solver, "--support", "2,5,10,20,50,100,200,all",
                          "--repeats", "3", "--out", target, log=log)
            curves[name] = support_curve(target)
        save("support", curves)
    if "active" in steps and "active" not in result:
        target = out / "active"
        if not (target / "results.csv").is_file():
            hemoembed("active-learn", stores["trained encoder"], "--simulate", "--labels", data / "pbc256",
                      "--batch", "90", "--init", "90", "--strategy", "uncertainty,random", "--repeats",
                      str(args.al_repeats), "--test-fraction", "0.1", "--max-labels", str(args.al_max_labels),
                      "--out", target, "--overwrite", log=log)
        save("active", active_summary(target))
    if "adapt" in steps and "adapt" not in result:
        target = out / "adapt"
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "adapt_bccd.py"), "--source", str(run if
                        args.encoder is None else args.encoder.parent), "--repeats", str(args.adapt_repeats),
                        "--curve-repeats", str(args.adapt_repeats), "--out", str(target),
                        "--target", str(data / "bccd" / "BCCD_cropped"),
                        "--source-images", str(data / "pbc256" / "PBC_dataset_normal_DIB")], cwd=REPO, check=True,
                       stdout=open(log, "a"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
        save("adapt", json.loads((target / "ablation.json").read_text()))
    if "tsne" in steps and not (out / "maps" / "pbc").is_dir():
        hemoembed("tsne", stores["trained encoder"], "--labels", data / "pbc256", "--colour-by", "label", "--out",
                  out / "maps" / "pbc", log=log)
    (out / "quality.md").write_text(markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "wbcatt"}, indent=1))


if __name__ == "__main__":
    main()
