"""Label prediction commands: fit-svm, predict, baseline."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import (
    FRACTION,
    NON_NEGATIVE,
    PIXELS,
    POSITIVE,
    allow_outside_root_option,
    echo,
    images_argument,
    number_list,
    overwrite_option,
    prepare_output_dir,
    prepare_output_file,
    progress,
    seed_option,
)


@main.command("fit-svm")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--labels", "labels", multiple=True, type=click.Path(path_type=Path),
              help="Labels CSV joined on --key, or a class-per-folder image tree (repeat to concatenate, e.g. "
                   "train + val). Without it only the store's metadata columns (e.g. site) are used: labels are "
                   "never stored.")
@click.option("--columns", default="all", show_default=True,
              help="Comma-separated label columns, or 'all' (every column but the key and identifiers).")
@click.option("--key", default="path", show_default=True, help="Join column shared by the CSV and the store.")
@click.option("--test", "test_csv", type=click.Path(path_type=Path), default=None,
              help="Labels CSV of the test images (e.g. an official split); otherwise --test-fraction.")
@click.option("--test-fraction", type=FRACTION, default=0.1, show_default=True,
              help="Stratified (by the first column) test fraction when --test is not given.")
@click.option("--group-column", default="", help="Split test and CV folds by this column (patient, site).")
@click.option("--solver", type=click.Choice(["liblinear", "sgd", "libsvm"]), default="liblinear", show_default=True,
              help="liblinear: LinearSVC (best on trained embeddings); sgd: hinge-loss SGD (for very large stores); "
                   "libsvm: SVC(kernel='linear') as in the paper.")
@click.option("--C", "c_values", default="0.1", show_default=True,
              help="SVM regularisation; several values (0.1,1,10) are chosen by --cv on training rows only.")
@click.option("--cv", type=NON_NEGATIVE, default=5, show_default=True,
              help="Stratified CV folds on the training rows (0 or 1: none).")
@click.option("--support", default="", help="Learning curve: labelled images per class, e.g. 2,5,10,20,50,100,all.")
@click.option("--repeats", type=POSITIVE, default=3, show_default=True, help="Seeds per support size.")
@click.option("--bootstrap", type=POSITIVE, default=1000, show_default=True,
              help="Bootstrap resamples for 95% intervals.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder (one sub-folder per column).")
@seed_option
@overwrite_option
def fit_svm(store: Path, labels: tuple[Path, ...], columns: str, key: str, test_csv: Path | None,
            test_fraction: float, group_column: str, solver: str, c_values: str, cv: int, support: str,
            repeats: int, bootstrap: int, out: Path, seed: int, overwrite: bool) -> None:
    """Fit one linear SVM per label column on an embedding store, evaluate it, save it.

    Writes per column: model.skops + model.json (with the store fingerprint), report.json, per_class.csv,
    confusion.png, pr_curves.png (and learning_curve.* with --support); summary.csv across columns.

    \b
    Example (WBCAtt official split on a PBC store):
      hemoembed fit-svm stores/pbc64 --labels ../shared/data/wbcatt/pbc_attr_v1_train.csv \\
        --labels ../shared/data/wbcatt/pbc_attr_v1_val.csv --test ../shared/data/wbcatt/pbc_attr_v1_test.csv \\
        --columns all --support 2,5,10,20,50,100,all --out svm_wbcatt
    Example (labels from the class folders the store was embedded from, 10% stratified test split):
      hemoembed fit-svm stores/pbc64 --labels ../shared/data/pbc256 --columns label --test-fraction 0.1 \\
        --out svm_pbc8
    """
    from ..tasks.svm import FitSVMConfig, parse_sizes, run

    sizes = [str(s) for s in parse_sizes(support)] if support.strip() else []
    config = FitSVMConfig(store=str(store), labels=[str(p) for p in labels],
                          columns=[c.strip() for c in columns.split(",") if c.strip()], key=key,
                          test=str(test_csv or ""), test_fraction=test_fraction, group_column=group_column,
                          solver=solver, C=number_list(c_values, "--C"), cv=cv, support=sizes, repeats=repeats,
                          n_bootstrap=bootstrap, seed=seed)
    prepare_output_dir(out, overwrite, inputs=[store, *labels, test_csv])
    summary = run(config, out, progress=progress)
    for row in summary["columns"]:
        echo(f"{row['column']:<28} macro-F1 {row['macro_f1']:.4f} "
             f"[{row['macro_f1_ci_low']:.4f}, {row['macro_f1_ci_high']:.4f}]  accuracy {row['accuracy']:.4f}  "
             f"(n_test {row['n_test']}; chance: macro-F1 {row['chance_macro_f1']:.3f}, "
             f"accuracy {row['chance_accuracy']:.3f})")
    if summary["n_attribute_columns"] > 1:  # a mean of several (WBCAtt's 11 attributes); of one it only repeats it
        echo(f"mean attribute macro-F1 over {summary['n_attribute_columns']} columns: "
             f"{summary['mean_attribute_macro_f1']:.4f}")
    echo(f"models and reports in {out}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("images", required=False, type=click.Path(path_type=Path))
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Predict every image of this store.")
@click.option("--encoder", type=click.Path(path_type=Path), default=None,
              help="Encoder (.keras, or an adapter's encoder.json) that embeds IMAGES (folder or CSV manifest) first.")
@click.option("--image-root", type=click.Path(path_type=Path), default=None,
              help="Folder that a CSV manifest's 'path' column is relative to.")
@allow_outside_root_option()
@click.option("--batch-size", type=POSITIVE, default=64, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Predictions CSV to write.")
@overwrite_option
def predict(model_dir: Path, images: Path | None, store: Path | None, encoder: Path | None,
            image_root: Path | None, allow_outside_root: bool, batch_size: int, out: Path,
            overwrite: bool) -> None:
    """Predict labels with saved SVMs: label, probability of every class and second-most-likely class.

    MODEL_DIR is a fit-svm output (every column) or one column's folder. The store or encoder must be
    the one the models were trained on (same fingerprint).

    \b
    Example:
      hemoembed predict svm_demo --store stores/demo --out predictions.csv
      hemoembed predict svm_demo --encoder encoder.keras new_cells/ --out predictions.csv
    """
    from ..errors import InputError
    from ..tasks.svm import PredictConfig, run_predict

    if (store is None) == (encoder is None):
        raise InputError("give exactly one of --store STORE or --encoder ENCODER IMAGES")
    config = PredictConfig(model=str(model_dir), store=str(store or ""), encoder=str(encoder or ""),
                           images=str(images or ""), image_root=str(image_root or ""),
                           allow_outside_root=allow_outside_root, batch_size=batch_size)
    prepare_output_file(out, overwrite, inputs=[model_dir, store, images, encoder])
    done = run_predict(config, out, progress=progress)
    if done.skipped:
        echo(f"warning: {len(done.skipped)} image(s) could not be decoded and are not predicted, "
             f"e.g. {done.skipped[0]}")
    echo(f"{done.n_images} images, {done.n_columns} column(s) predicted -> {out}")


@main.command()
@images_argument
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Labels CSV joined on 'path' (relative to the image root). Default: IMAGES' own labels.")
@click.option("--column", default="label", show_default=True, help="Label column to learn.")
@click.option("--test", "test_csv", type=click.Path(path_type=Path), default=None,
              help="CSV of test images (path + column); otherwise --test-fraction of IMAGES.")
@click.option("--test-fraction", type=FRACTION, default=0.1, show_default=True)
@click.option("--weights", default="none", show_default=True,
              help="Encoder init: imagenet, none or an encoder (.keras, an adapter's encoder.json).")
@click.option("--image-size", type=PIXELS, default=224, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--head-epochs", type=NON_NEGATIVE, default=10, show_default=True)
@click.option("--finetune-epochs", type=NON_NEGATIVE, default=20, show_default=True)
@click.option("--small-head-epochs", type=POSITIVE, default=30, show_default=True,
              help="Head-only epochs when there are 450 training images or fewer (no fine-tuning).")
@click.option("--bootstrap", type=POSITIVE, default=1000, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder.")
@seed_option
@overwrite_option
def baseline(manifest, labels: Path | None, column: str, test_csv: Path | None, test_fraction: float, weights: str,
             image_size: int, batch_size: int, head_epochs: int, finetune_epochs: int, small_head_epochs: int,
             bootstrap: int, out: Path, seed: int, overwrite: bool) -> None:
    """Supervised baseline: the same encoder with a softmax head (head, then fine-tuning without BatchNorm).

    Writes the same report files as fit-svm (report.json, per_class.csv, PNGs) plus baseline.keras.

    \b
    Example:
      hemoembed baseline ../shared/data/pbc256 --labels ../shared/data/wbcatt/pbc_attr_v1_train.csv \\
        --test ../shared/data/wbcatt/pbc_attr_v1_test.csv --weights runs/pbc64/encoder.keras --out baseline_run
    Example (synthetic cells: 180 training images, so the head alone trains, for 2 epochs):
      hemoembed demo-data cells --n-per-class 20 --sites 1 --size 64
      hemoembed baseline cells --image-size 64 --small-head-epochs 2 --out baseline_demo
    """
    from ..tasks.baseline import BaselineConfig, run

    config = BaselineConfig(images=str(manifest.source), labels=str(labels or ""), column=column,
                            test=str(test_csv or ""), test_fraction=test_fraction, weights=weights,
                            image_size=image_size, batch_size=batch_size, head_epochs=head_epochs,
                            finetune_epochs=finetune_epochs, small_head_epochs=small_head_epochs,
                            n_bootstrap=bootstrap, seed=seed)
    prepare_output_dir(out, overwrite, inputs=[manifest, labels, test_csv,
                                              None if weights in ("none", "imagenet") else weights])
    report = run(config, out, manifest=manifest, progress=progress)
    echo(f"{column}: macro-F1 {report['macro']['f1']:.4f} [{report['bootstrap']['macro_f1_ci'][0]:.4f}, "
         f"{report['bootstrap']['macro_f1_ci'][1]:.4f}]  accuracy {report['accuracy']:.4f}  "
         f"(n_train {report['model']['n_train']}, n_test {report['n_test']}, stages {', '.join(config.stages)}) "
         f"-> {out}")
