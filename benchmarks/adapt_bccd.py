"""Adapter ablation and shot-count curve on real data: PBC source → BCCD target; prints JSON.

Source: the PBC-pretrained 64-px encoder (``/work/runs/pbc64/encoder.keras``) when it exists, otherwise the
given ``--source`` (e.g. a random-init 64-px encoder); target: ``../shared/data/bccd`` (351 crops, another
lab). Writes ablation.{md,csv,json,png} and shot_curve.csv into ``--out``.

    .venv/bin/python benchmarks/adapt_bccd.py --repeats 3 --curve-repeats 10 --out /tmp/adapt_bccd
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PRETRAINED = Path("/work/runs/pbc64/encoder.keras")


def main() -> None:
    from hemoembed.cli.common import number_list
    from hemoembed.tasks.adapt import CONDITIONS, CURVE_SHOTS, AdaptConfig, prepare
    from hemoembed.tasks.adapt.study import ablation_table, curve_table, run_ablation, shot_curve, write_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(PRETRAINED if PRETRAINED.is_file() else "/work/runs/random64"))
    parser.add_argument("--target", default=str(DATA / "bccd" / "BCCD_cropped"))
    parser.add_argument("--source-images", default=str(DATA / "pbc256" / "PBC_dataset_normal_DIB"))
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--curve-repeats", type=int, default=10)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--lr", default="1e-4,1e-3", help="fine-tuning learning rates (comma-separated grid)")
    parser.add_argument("--epochs", default="10", help="fine-tuning epochs (comma-separated grid)")
    parser.add_argument("--batch-size", default="16", help="fine-tuning batch sizes (comma-separated grid)")
    parser.add_argument("--cv", type=int, default=3, help="CV folds inside the shots to choose the grid point")
    parser.add_argument("--random-head", action="store_true",
                        help="fine-tuning starts from a random head (default: from a fit on frozen embeddings, LP-FT)")
    parser.add_argument("--out", default="/tmp/adapt_bccd")
    args = parser.parse_args()

    config = AdaptConfig(source=args.source, target=args.target, source_images=args.source_images,
                         shots=args.shots, ablation=True, repeats=args.repeats, conditions=args.conditions.split(","),
                         lr=number_list(args.lr, "--lr", float), epochs=number_list(args.epochs, "--epochs", int),
                         batch_size=number_list(args.batch_size, "--batch-size", int), cv=args.cv,
                         warm_head=not args.random_head,
                         curve_shots=list(CURVE_SHOTS))
    started = time.time()
    prep = prepare(config)
    t_prepare = time.time() - started
    rows = run_ablation(prep, config)
    t_ablation = time.time() - started - t_prepare
    config.repeats = args.curve_repeats
    curve = shot_curve(prep, config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_study(out, rows, curve)
    print(json.dumps({
        "source": args.source, "target": args.target, "n_target": len(prep.labels),
        "classes": prep.notes["class_mapping"], "left_out": prep.notes["missing_classes"],
        "too_few_images": prep.notes["too_few_images"], "shots": args.shots, "repeats": args.repeats,
        "finetune": {"lr": config.lr, "epochs": config.epochs, "batch_size": config.batch_size, "cv": args.cv,
                     "warm_head": not args.random_head},
        "ablation": ablation_table(rows), "curve": curve_table(curve), "curve_mode": config.curve_mode,
        "curve_repeats": args.curve_repeats, "seconds": {"prepare": round(t_prepare, 1),
                                                         "ablation": round(t_ablation, 1),
                                                         "total": round(time.time() - started, 1)},
        "machine": f"{platform.machine()} {os.cpu_count()} cpu", "date": time.strftime("%Y-%m-%d"),
    }, indent=2))


if __name__ == "__main__":
    main()
