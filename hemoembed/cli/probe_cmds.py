"""``hemoembed probe``: is an encoder's embedding worth having? It beside raw pixels, a random encoder and chance."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import (
    FRACTION,
    POSITIVE,
    echo,
    images_argument,
    overwrite_option,
    prepare_output_dir,
    progress,
    seed_option,
)


@main.command()
@click.argument("encoder", type=click.Path(path_type=Path))
@images_argument
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Labels CSV joined on path (default: the manifest's or the folders' labels).")
@click.option("--column", default="label", show_default=True, help="Label column.")
@click.option("--repeats", type=POSITIVE, default=5, show_default=True, help="Stratified held-out splits.")
@click.option("--test-fraction", type=FRACTION, default=0.25, show_default=True,
              help="Held-out share of each split.")
@click.option("--pixel-side", type=click.IntRange(16, 256), default=32, show_default=True,
              help="Side in px (16-256) of the raw-pixel baseline (same colour normalisation and crop as the encoder).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for probe.json and probe_config.json (optional).")
@seed_option
@overwrite_option
def probe(encoder: Path, manifest, labels: Path | None, column: str, repeats: int, test_fraction: float,
          pixel_side: int, out: Path | None, seed: int, overwrite: bool) -> None:
    """Linear-probe an ENCODER on labelled IMAGES beside its baselines: the same linear SVM (as fit-svm) on
    the encoder's embedding, on an untrained encoder of the same architecture, on the raw pixels, and chance,
    each over the same held-out splits. An embedding worth using beats all three.

    \b
    Example (the demo's step 2: site-0 cells, whose labels pretraining never saw):
      hemoembed probe demo-run/pretrain/encoder.keras demo-run/cells/site0.csv
    Example (real data, a labelled sample):
      hemoembed probe runs/pbc64/encoder.keras ../shared/data/wbcatt/pbc_attr_v1_val.csv \\
        --image-root ../shared/data/pbc256 --out probe_pbc64
    """
    from ..tasks.probe import ENCODER, ProbeConfig, run, verdict

    config = ProbeConfig(encoder=str(encoder), images=str(manifest.source), image_root=str(manifest.root),
                         labels=str(labels or ""), column=column, repeats=repeats, test_fraction=test_fraction,
                         pixel_side=pixel_side, seed=seed)
    if out is not None:
        prepare_output_dir(out, overwrite, inputs=[manifest, encoder, labels])
    summary = run(config, out, manifest=manifest, progress=progress)
    scores = summary["scores"]
    echo(f"linear SVM on held-out images ({repeats} splits, {test_fraction:.0%} held out each; "
         f"{summary['n_images']} images, {len(summary['classes'])} classes)")
    echo(f"  {'representation':<28}{'accuracy':>16}{'macro-F1':>16}")
    names = {ENCODER: f"encoder {Path(encoder).name}", "raw pixels": f"raw pixels ({pixel_side} px)",
             "random encoder": "random encoder (untrained)", "chance": "chance (random guess)"}
    for name, row in scores.items():
        echo(f"  {names.get(name, name):<28}{row['accuracy_mean']:>9.3f} ± {row['accuracy_sd']:.3f}"
             f"{row['macro_f1_mean']:>9.3f} ± {row['macro_f1_sd']:.3f}")
    echo(verdict(summary))
    if out is not None:
        echo(f"scores in {out / 'probe.json'}")
