"""Explanation commands: tsne (fit a map, or place new cells on a saved one) and gradcam."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from . import main
from .common import echo, overwrite_option, prepare_output_dir, progress, seed_option


@dataclass(frozen=True)
class TsneRun:
    """What one ``hemoembed tsne`` run read and wrote (saved as tsne_run.json)."""

    store: str = ""
    labels: str = ""
    color_by: tuple[str, ...] = ()
    map: str = ""
    query: str = ""
    tsne: dict = field(default_factory=dict)


@main.command()
@click.argument("store_dir", metavar="STORE", type=click.Path(path_type=Path), required=False)
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="CSV with a 'path' column and label/attribute columns to colour by.")
@click.option("--color-by", "color_by", multiple=True,
              help="Column to colour by (labels CSV or store metadata); repeatable, one PNG each. "
                   "Default: label when present.")
@click.option("--map", "map_dir", type=click.Path(path_type=Path), default=None,
              help="A saved map (an earlier --out) to place --query cells onto.")
@click.option("--query", "query_dir", type=click.Path(path_type=Path), default=None,
              help="Store of new cells to place onto --map (same encoder).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--perplexity", type=float, default=30.0, show_default=True)
@click.option("--n-iter", type=int, default=1000, show_default=True,
              help="Optimisation iterations after the early-exaggeration phase.")
@click.option("--early-exaggeration-iter", type=int, default=250, show_default=True)
@click.option("--pca", "pca_dims", type=int, default=50, show_default=True, help="PCA dimensions first (0: off).")
@click.option("--n-jobs", type=int, default=-1, show_default=True, help="Threads (-1: all cores).")
@click.option("--gradient", type=click.Choice(["bh", "fft"]), default="bh", show_default=True,
              help="Repulsive forces: Barnes-Hut (faster and more exact up to ~10^5 cells here) or FFT "
                   "interpolation (scales better for much larger maps).")
@seed_option
@overwrite_option
def tsne(store_dir: Path | None, labels: Path | None, color_by: tuple[str, ...], map_dir: Path | None,
         query_dir: Path | None, out: Path, perplexity: float, n_iter: int, early_exaggeration_iter: int,
         pca_dims: int, n_jobs: int, gradient: str, seed: int, overwrite: bool) -> None:
    """Fit an openTSNE map of a STORE, or place new cells onto a saved map.

    A map runs PCA initialisation, perplexity 30, Euclidean distances, 250 early-exaggeration iterations
    then --n-iter 1000 more. OUT holds coordinates.csv, map_<column>.png and the reusable map
    (map.npz + map.json: plain arrays, no pickle, sha256-checked on loading).

    \b
    Examples:
      hemoembed tsne stores/pbc --labels ../shared/data/wbcatt/pbc_attr_v1_train.csv \\
          --color-by label --color-by cell_size --out maps/pbc
      hemoembed tsne --map maps/pbc --query stores/bccd --out maps/bccd_on_pbc
    """
    from ..config import save_config
    from ..errors import InputError
    from ..explain.tsne import TsneConfig

    if (map_dir is None) == (store_dir is None) or (map_dir is None) != (query_dir is None):
        raise InputError("give either STORE (fit a map) or --map MAP --query STORE2 (place cells on a map)")
    out = prepare_output_dir(out, overwrite)
    config = TsneConfig(perplexity=perplexity, n_iter=n_iter, early_exaggeration_iter=early_exaggeration_iter,
                        pca_dims=pca_dims, seed=seed, n_jobs=n_jobs, gradient=gradient)
    if map_dir is not None:
        n = _place_on_map(map_dir, query_dir, out)
        save_config(TsneRun(map=str(map_dir), query=str(query_dir)), out / "tsne_run.json")
        echo(f"{n} cells placed onto {map_dir} -> {out / 'query_coordinates.csv'}, {out / 'query_map.png'}")
        return
    written = _fit_map(store_dir, labels, color_by, config, out)
    save_config(TsneRun(store=str(store_dir), labels=str(labels or ""), color_by=color_by,
                        tsne=dict(vars(config))), out / "tsne_run.json")
    echo(f"map of {written[0]} cells ({config.early_exaggeration_iter} + {config.n_iter} iterations) in {out}: "
         f"{', '.join(p.name for p in written[1:])}")


def _colour_columns(store, labels: Path | None, color_by: tuple[str, ...]) -> dict[str, list[str]]:
    """Per stored row, the values of each colour column (labels CSV first, then store metadata)."""
    from ..errors import InputError

    paths = store.paths
    found: dict[str, list[str]] = {}
    if labels is not None:
        _, columns, keys = store.join(labels, key="path", missing="drop")
        if not keys:
            raise InputError(f"{labels}: none of its paths are in store {store.directory}")
        row = {k: i for i, k in enumerate(keys)}
        for name, values in columns.items():
            found[name] = [values[row[p]] if p in row else "unlabelled" for p in paths]
    for name in store.metadata_columns:
        found.setdefault(name, [str(v) for v in store.column(name)])
    wanted = list(color_by) or (["label"] if "label" in found else [])
    absent = [c for c in wanted if c not in found]
    if absent:
        raise InputError(f"--color-by {absent[0]}: no such column in "
                         f"{'the labels CSV or ' if labels else ''}the store (have: {', '.join(found) or 'none'})")
    return {c: found[c] for c in wanted}


def _fit_map(store_dir: Path, labels: Path | None, color_by: tuple[str, ...], config, out: Path) -> list:
    import matplotlib.pyplot as plt

    from ..explain.plots import save_figure, scatter_categories
    from ..explain.tsne import TsneMap
    from ..store.store import EmbeddingStore

    store = EmbeddingStore.open(store_dir)
    colours = _colour_columns(store, labels, color_by)
    with progress(config.total_iterations, "t-SNE") as advance:
        tsne_map = TsneMap.fit(store.embeddings(), store.paths, config,
                               source={"store": str(store_dir), "fingerprint": store.fingerprint},
                               progress=advance)
    tsne_map.save(out)
    _write_coordinates(out / "coordinates.csv", tsne_map.keys, tsne_map.coords, colours)
    written = [len(tsne_map.keys), out / "coordinates.csv"]
    for name, values in (colours or {"": None}).items():
        fig, ax = plt.subplots(figsize=(8, 6.5))
        scatter_categories(ax, tsne_map.coords, values, legend_title=name,
                           title=f"t-SNE of {len(values or tsne_map.keys)} cells" + (f" by {name}" if name else ""))
        written.append(save_figure(fig, out / (f"map_{_safe(name)}.png" if name else "map.png")))
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _write_coordinates(path: Path, keys, coords, columns: dict[str, list[str]]) -> None:
    from ..config import atomic_write_text, csv_text

    rows = [["path", "x", "y", *columns]]
    rows += [[k, f"{x:.5f}", f"{y:.5f}", *(columns[c][i] for c in columns)] for i, (k, (x, y)) in
             enumerate(zip(keys, coords))]
    atomic_write_text(path, csv_text(rows))


def _place_on_map(map_dir: Path, query_dir: Path, out: Path) -> int:
    import matplotlib.pyplot as plt

    from ..data.manifest import read_csv_rows
    from ..errors import MismatchError
    from ..explain.plots import save_figure, scatter_categories
    from ..explain.tsne import TsneMap
    from ..store.store import EmbeddingStore, short

    tsne_map = TsneMap.load(map_dir)
    store = EmbeddingStore.open(query_dir)
    fingerprint = tsne_map.source.get("fingerprint", "")
    if fingerprint and fingerprint != store.fingerprint:
        raise MismatchError(f"{query_dir}: store was built by encoder {short(store.fingerprint)} but map {map_dir} "
                            f"by encoder {short(fingerprint)}; embed the new cells with the map's encoder")
    placed = tsne_map.transform(store.embeddings())
    meta = {c: [str(v) for v in store.column(c)] for c in store.metadata_columns}
    _write_coordinates(out / "query_coordinates.csv", store.paths, placed, meta)
    reference_colours, name = None, ""
    if (map_dir / "coordinates.csv").is_file():
        header, rows = read_csv_rows(map_dir / "coordinates.csv")
        if len(header) > 3:
            name, reference_colours = header[3], [row[3] for row in rows]
    fig, ax = plt.subplots(figsize=(8, 6.5))
    scatter_categories(ax, tsne_map.coords, reference_colours, legend_title=name, alpha=0.35,
                       title=f"{len(placed)} new cells placed onto a map of {len(tsne_map.keys)}")
    ax.scatter(placed[:, 0], placed[:, 1], marker="*", s=90 if len(placed) < 200 else 30, c="black",
               edgecolors="white", linewidths=0.5, label=f"new cells ({len(placed)})", zorder=3)
    handles, texts = ax.get_legend_handles_labels()
    legend = ax.legend(handles, texts, title=name or None, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                       frameon=False)
    for handle in legend.legend_handles:  # the faint, tiny background points would give invisible swatches
        handle.set_alpha(1.0)
        handle.set_sizes([30])
    save_figure(fig, out / "query_map.png")
    return len(placed)


@dataclass(frozen=True)
class GradcamRun:
    """Settings of one ``hemoembed gradcam`` run (saved as gradcam_run.json)."""

    encoder: str
    images: tuple[str, ...]
    against: tuple[str, ...] = ()
    model: str = ""
    class_name: str = ""
    target: str = ""


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
      hemoembed gradcam runs/pbc/encoder.keras a.jpg --against p.jpg --against n.jpg --out cams/triplet
      hemoembed gradcam runs/pbc/encoder.keras a.jpg --against b.jpg --target distance --out cams/pair
      hemoembed gradcam runs/pbc/encoder.keras cell.jpg --model svm/label --class basophil --out cams/svm
    """
    from ..config import save_config
    from ..errors import InputError
    from ..explain import gradcam as gc
    from ..model.encoder import fingerprint, load_encoder

    if bool(against) == bool(model_dir) or (model_dir is not None) != (class_name is not None):
        raise InputError("give either --against IMAGE (1 or 2 times) or --model SVM_DIR --class X")
    if len(against) > 2:
        raise InputError(f"--against takes one image (pair) or two (positive, negative), got {len(against)}")
    for path in (*images, *against):
        if not Path(path).is_file():
            raise InputError(f"{path}: image file not found")
    model, record = load_encoder(encoder)
    out = prepare_output_dir(out, overwrite)
    results = []
    with progress(len(images), "GradCAM++") as advance:
        if model_dir is not None:
            decision = gc.LinearDecision.from_svm(_svm_folder(model_dir, column), fingerprint(model))
            for image in images:
                result = gc.explain_class(model, gc.load_inputs([image], record), decision, class_name)
                results.append(([image], [f"class {class_name}"], result))
                advance(1)
        else:
            others = gc.load_inputs(against, record)
            roles = ["anchor", "positive", "negative"] if len(against) == 2 else ["image", "compared with"]
            for image in images:
                anchor = gc.load_inputs([image], record)[0]
                result = (gc.explain_triplet(model, anchor, *others) if len(against) == 2
                          else gc.explain_pair(model, anchor, others[0], target))
                results.append(([image, *against], roles, result))
                advance(1)
    panel = _write_cams(results, out)
    save_config(GradcamRun(str(encoder), tuple(map(str, images)), tuple(map(str, against)), str(model_dir or ""),
                           class_name or "", results[0][2].target), out / "gradcam_run.json")
    echo(f"{sum(len(r[0]) for r in results)} maps ({results[0][2].target}) in {out}; panel {panel}")


def _svm_folder(model_dir: Path, column: str | None) -> Path:
    from ..tasks.svm import column_folder

    return column_folder(model_dir, column)


def _write_cams(results, out: Path) -> Path:
    """Per image: input PNG, overlay PNG, raw map .npy; plus results.csv and panel.png."""
    import io

    import numpy as np

    from ..config import atomic_write_bytes, atomic_write_text, csv_text
    from ..data.imageio import save_png
    from ..explain.gradcam import overlay
    from ..explain.plots import image_grid, save_figure

    rows = [["explanation", "role", "image", "target", "score", "input", "overlay", "map"]]
    grid, titles = [], []
    for e, (paths, roles, result) in enumerate(results):
        cams = result.upsampled()
        grid_row, title_row = [], []
        for i, (path, role) in enumerate(zip(paths, roles)):
            stem = f"{e:03d}_{i}_{_safe(role)}_{_safe(Path(path).stem)}"
            blended = overlay(result.images[i], cams[i])
            save_png(result.images[i], out / f"{stem}_input.png")
            save_png(blended, out / f"{stem}_gradcam.png")
            buffer = io.BytesIO()
            np.save(buffer, result.maps[i].astype(np.float32), allow_pickle=False)
            atomic_write_bytes(out / f"{stem}_gradcam.npy", buffer.getvalue())
            rows.append([str(e), role, str(path), result.target, f"{result.score[i]:.6f}", f"{stem}_input.png",
                         f"{stem}_gradcam.png", f"{stem}_gradcam.npy"])
            grid_row += [result.images[i], blended]
            title_row += [f"{role}: {Path(path).name[:22]}", f"GradCAM++ {result.target}\nscore {result.score[i]:.3f}"]
        grid.append(grid_row)
        titles.append(title_row)
    atomic_write_text(out / "results.csv", csv_text(rows))
    return save_figure(image_grid(grid, titles, thumb=2.0), out / "panel.png")
