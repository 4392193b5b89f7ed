"""Site adaptation command: adapt (few-shot adapter, ablation study, shot-count curve)."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import (
    NON_NEGATIVE,
    POSITIVE,
    allow_outside_root_option,
    echo,
    number_list,
    overwrite_option,
    prepare_output_dir,
    progress,
    seed_option,
)


@main.command()
@click.option("--source", type=click.Path(path_type=Path), required=True,
              help="Pretraining run folder (RUN/encoder.keras, RUN/colour_reference.json) or an encoder .keras.")
@click.option("--target", type=click.Path(path_type=Path), required=True,
              help="Target-site images: folder per class or CSV manifest (path + label column).")
@click.option("--image-root", type=click.Path(path_type=Path), default=None, help="Root of a CSV --target's paths.")
@allow_outside_root_option("Allow --target and --source-images manifest paths outside their root.")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Labels CSV (path, label) for the target images, if not folder names / manifest column.")
@click.option("--label-column", default="label", show_default=True)
@click.option("--source-images", type=click.Path(path_type=Path), default=None,
              help="Labelled source images: colour reference when the run keeps none, source support, ablation.")
@click.option("--class-map", type=click.Path(path_type=Path), default=None,
              help="CSV target class,source class (default: case-insensitive name match).")
@click.option("--shots", type=click.IntRange(min=2), default=100, show_default=True,
              help="Labelled target images used.")
@click.option("--min-per-class", type=POSITIVE, default=2, show_default=True)
@click.option("--mode", type=click.Choice(["svm", "head", "finetune"]), default="svm", show_default=True)
@click.option("--save-encoder", type=click.Choice(["reference", "copy"]), default="reference", show_default=True,
              help="svm/head: write the adapted encoder as encoder.json, a small checked reference to the source "
              "encoder (its weights are unchanged; every command loads it), or encoder.keras, a self-contained "
              "copy of the weights to use without the source run. finetune always writes the copy.")
@click.option("--no-colour-transform", is_flag=True, help="Skip the Reinhard transfer to the source style.")
@click.option("--source-support", type=NON_NEGATIVE, default=0, show_default=True,
              help="svm mode: add N source images per (mapped) class to the shots.")
@click.option("--lr", default="1e-4,1e-3", show_default=True, help="finetune: learning rates tried by CV.")
@click.option("--epochs", default="5,10", show_default=True, help="finetune: epoch counts tried by CV.")
@click.option("--batch-size", default="16", show_default=True, help="finetune: batch sizes tried by CV.")
@click.option("--warm-head/--random-head", default=True, show_default=True,
              help="finetune: start the softmax head from a fit on the frozen embeddings before the encoder "
              "trains (linear probing, then fine-tuning), or from random weights, whose first gradients can "
              "tear the pretrained features apart (BCCD: 2 of 5 runs collapsed).")
@click.option("--cv", type=NON_NEGATIVE, default=3, show_default=True,
              help="finetune: CV folds inside the shots (0 or 1: none).")
@click.option("--ablation", is_flag=True, help="Also run every ablation condition (ablation.md/csv/png).")
@click.option("--repeats", type=POSITIVE, default=10, show_default=True, help="Ablation / curve repeats.")
@click.option("--conditions", default="", help="Ablation conditions (default all: scratch,no_adaptation,"
              "head_only,svm,mixed,no_colour,full).")
@click.option("--curve", default="", help="Shot-count curve, e.g. 10,20,30,45,60,75,90,100.")
@click.option("--curve-mode", type=click.Choice(["svm", "head", "finetune"]), default="svm", show_default=True)
@click.option("--bootstrap", type=POSITIVE, default=1000, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@seed_option
@overwrite_option
def adapt(source: Path, target: Path, image_root: Path | None, allow_outside_root: bool, labels: Path | None,
          label_column: str, source_images: Path | None, class_map: Path | None, shots: int, min_per_class: int,
          mode: str, save_encoder: str, no_colour_transform: bool, source_support: int, lr: str, epochs: str,
          batch_size: str, warm_head: bool, cv: int, ablation: bool, repeats: int, conditions: str, curve: str,
          curve_mode: str, bootstrap: int, out: Path, seed: int, overwrite: bool) -> None:
    """Adapt a pretrained encoder to a new site with few labels (Reinhard colour transfer first).

    Writes shots.csv, the adapted encoder (Reinhard layer inside: encoder.json, a reference to the source
    encoder, or encoder.keras, a copy; see --save-encoder), store/, model.skops + model.json (usable by
    predict), report.json, per_class.csv, confusion.png, pr_curves.png, test_predictions.csv; with
    --ablation / --curve also ablation.{md,csv,json,png}.

    \b
    Example (synthetic sites: pretrain on site0, adapt to site1, predict site2's new crops):
      hemoembed demo-data cells --sites 3 --n-per-class 30 --size 64
      hemoembed pretrain cells/site0.csv --out runs/demo --weights none --image-size 64 --epochs 1
      hemoembed adapt --source runs/demo --target cells/site1.csv --source-images cells/site0.csv \\
        --shots 20 --mode svm --out adapt_demo
      hemoembed predict adapt_demo --store adapt_demo/store --out predictions.csv
      hemoembed predict adapt_demo --encoder adapt_demo/encoder.json cells/site2.csv --out new.csv
    Example (BCCD target, PBC source, study):
      hemoembed adapt --source runs/pbc64 --target ../shared/data/bccd/BCCD_cropped \\
        --source-images ../shared/data/pbc256/PBC_dataset_normal_DIB --shots 100 --mode finetune \\
        --ablation --repeats 10 --curve 10,20,30,45,60,75,90,100 --out adapt_bccd
    """
    from ..tasks.adapt import CONDITIONS, AdaptConfig
    from ..tasks.adapt import run as run_adapt

    config = AdaptConfig(
        source=str(source), target=str(target), image_root=str(image_root or ""),
        allow_outside_root=allow_outside_root, labels=str(labels or ""),
        label_column=label_column, source_images=str(source_images or ""), class_map=str(class_map or ""),
        shots=shots, min_per_class=min_per_class, mode=mode, save_encoder=save_encoder,
        colour_transform=not no_colour_transform,
        source_support=source_support, lr=number_list(lr, "--lr", float), epochs=number_list(epochs, "--epochs", int),
        batch_size=number_list(batch_size, "--batch-size", int), warm_head=warm_head, cv=cv, n_bootstrap=bootstrap,
        ablation=ablation, repeats=repeats,
        conditions=[c.strip() for c in conditions.split(",") if c.strip()] or list(CONDITIONS),
        curve_shots=number_list(curve, "--curve", int) if curve.strip() else [], curve_mode=curve_mode, seed=seed)
    prepare_output_dir(out, overwrite, inputs=[source, target, labels, source_images, class_map])
    report = run_adapt(config, out, progress=progress)
    notes = report["adapter"]
    for side in ("target_only", "source_only"):
        if notes["missing_classes"][side]:
            echo(f"left out ({side.replace('_', ' ')}): {', '.join(notes['missing_classes'][side])}")
    if notes["too_few_images"]:
        echo(f"left out (fewer than 3 labelled images): {', '.join(notes['too_few_images'])}")
    ci = report["bootstrap"]["accuracy_ci"]
    echo(f"{mode}: accuracy {report['accuracy']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]  macro-F1 {report['macro']['f1']:.4f}"
         f"  ({notes['n_shots']} shots, {notes['n_test']} test images; chance: accuracy "
         f"{report['chance']['accuracy']:.3f}, macro-F1 {report['chance']['macro_f1']:.3f})")
    if (out / "ablation.md").is_file():
        echo((out / "ablation.md").read_text().rstrip())
    echo(f"adapted model, store and reports in {out}")
