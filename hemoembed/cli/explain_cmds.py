"""Explanation commands: tsne (fit a map, or place new cells on a saved one) and gradcam."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import (
    NON_NEGATIVE,
    POSITIVE,
    FiniteFloat,
    deprecated_option,
    echo,
    overwrite_option,
    prepare_output_dir,
    progress,
    seed_option,
)


@main.command()
@click.argument("store_dir", metavar="STORE", type=click.Path(path_type=Path), required=False)
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="CSV with a 'path' column and label/attribute columns to colour by.")
@click.option("--colour-by", "colour_by", multiple=True,
              help="Column to colour by (labels CSV or store metadata); repeatable, one PNG each. "
                   "Default: label when present.")
@click.option("--map", "map_dir", type=click.Path(path_type=Path), default=None,
              help="A saved map (an earlier --out) to place --query cells onto.")
@click.option("--query", "query_dir", type=click.Path(path_type=Path), default=None,
              help="Store of new cells to place onto --map (same encoder).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--perplexity", type=FiniteFloat(min=1.0), default=30.0, show_default=True)
@click.option("--n-iter", type=POSITIVE, default=1000, show_default=True,
              help="Optimisation iterations after the early-exaggeration phase.")
@click.option("--early-exaggeration-iter", type=NON_NEGATIVE, default=250, show_default=True)
@click.option("--pca", "pca_dims", type=NON_NEGATIVE, default=50, show_default=True,
              help="PCA dimensions first (0: off).")
@click.option("--n-jobs", type=click.IntRange(min=-1), default=-1, show_default=True,
              help="Threads (-1: all cores; 0 is refused).")
@click.option("--gradient", type=click.Choice(["bh", "fft"]), default="bh", show_default=True,
              help="Repulsive forces: Barnes-Hut (faster and more exact up to ~10^5 cells here) or FFT "
                   "interpolation (scales better for much larger maps).")
@deprecated_option("--color-by", "--colour-by", "colour_by")
@seed_option
@overwrite_option
def tsne(store_dir: Path | None, labels: Path | None, colour_by: tuple[str, ...], map_dir: Path | None,
         query_dir: Path | None, out: Path, perplexity: float, n_iter: int, early_exaggeration_iter: int,
         pca_dims: int, n_jobs: int, gradient: str, seed: int, overwrite: bool) -> None:
    """Fit an openTSNE map of a STORE, or place new cells onto a saved map.

    A map runs PCA initialisation, perplexity 30, Euclidean distances, 250 early-exaggeration iterations
    then --n-iter 1000 more. OUT holds coordinates.csv, map_<column>.png and the reusable map
    (map.npz + map.json: plain arrays, no pickle, sha256-checked on loading).

    \b
    Examples:
      hemoembed tsne stores/pbc64 --labels ../shared/data/wbcatt/pbc_attr_v1_train.csv \\
          --colour-by label --colour-by cell_size --out maps/pbc
      hemoembed tsne --map maps/pbc --query stores/bccd_pbc64 --out maps/bccd_on_pbc
    """
    from ..errors import InputError
    from ..explain.maps import fit_map, place_on_map
    from ..explain.tsne import TsneConfig

    if (map_dir is None) == (store_dir is None) or (map_dir is None) != (query_dir is None):
        raise InputError("give either STORE (fit a map) or --map MAP --query STORE2 (place cells on a map)")
    if n_jobs == 0:
        raise InputError("--n-jobs 0: give a number of threads, or -1 for all cores")
    out = prepare_output_dir(out, overwrite, inputs=[store_dir, labels, map_dir, query_dir])
    config = TsneConfig(perplexity=perplexity, n_iter=n_iter, early_exaggeration_iter=early_exaggeration_iter,
                        pca_dims=pca_dims, seed=seed, n_jobs=n_jobs, gradient=gradient)
    if map_dir is not None:
        n = place_on_map(map_dir, query_dir, out)
        echo(f"{n} cells placed onto {map_dir} -> {out / 'query_coordinates.csv'}, {out / 'query_map.png'}")
        return
    written = fit_map(store_dir, out, labels=labels, colour_by=colour_by, config=config, progress=progress)
    echo(f"map of {written[0]} cells ({config.early_exaggeration_iter} + {config.n_iter} iterations) in {out}: "
         f"{', '.join(p.name for p in written[1:])}")


@main.command()
@click.argument("encoder", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--against", multiple=True, type=click.Path(path_type=Path),
              help="One image (pair with each IMAGE) or two (positive, negative: triplet margin); repeatable.")
@click.option("--target", type=click.Choice(["similarity", "distance"]), default="similarity", show_default=True,
              help="Pair target: what makes the two alike (similarity) or different (distance).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="A fit-svm output (or one of its model folders) to explain a class decision.")
@click.option("--class", "class_name", default=None, help="Class whose SVM decision value is explained.")
@click.option("--column", default=None, help="Which model of a multi-column fit-svm output (e.g. cell_size).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@overwrite_option
def gradcam(encoder: Path, images: tuple[Path, ...], against: tuple[Path, ...], target: str,
            model_dir: Path | None, class_name: str | None, column: str | None, out: Path, overwrite: bool) -> None:
    """GradCAM++ maps of the triplet ENCODER for IMAGE files: overlay PNGs, raw maps (.npy), a panel.

    \b
    Examples:
      hemoembed gradcam runs/pbc64/encoder.keras a.jpg --against p.jpg --against n.jpg --out cams/triplet
      hemoembed gradcam runs/pbc64/encoder.keras a.jpg --against b.jpg --target distance --out cams/pair
      hemoembed gradcam runs/pbc64/encoder.keras cell.jpg --model svm_pbc8 --class basophil --out cams/svm
    """
    from ..explain.cams import GradcamRun, run_gradcam

    config = GradcamRun(str(encoder), tuple(map(str, images)), tuple(map(str, against)), str(model_dir or ""),
                        class_name or "")
    config.check()
    out = prepare_output_dir(out, overwrite, inputs=[encoder, *images, *against, model_dir])
    n_maps, explained, panel = run_gradcam(config, out, column=column, pair_target=target, progress=progress)
    echo(f"{n_maps} maps ({explained}) in {out}; panel {panel}")
