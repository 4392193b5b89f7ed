"""Data commands: check, demo-data, colour-reference, normalize."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import main
from .common import (
    echo,
    images_argument,
    overwrite_option,
    prepare_output_dir,
    prepare_output_file,
    progress,
    seed_option,
)


@main.command()
@images_argument
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write rejected files and reasons to this CSV (written even when rejects exist).")
@click.option("--min-size", type=int, default=16, show_default=True, help="Reject images with a side below this.")
@overwrite_option
def check(manifest, out: Path | None, min_size: int, overwrite: bool) -> None:
    """Check a dataset: classes, sizes, unreadable/truncated/duplicate/tiny files.

    Exits 0 when every image is usable and 2 when anything is rejected.

    \b
    Example:
      hemoembed check ../shared/data/bccd --out rejects.csv
      hemoembed check pbc_attr_v1_test.csv --image-root ../shared/data/pbc256
    """
    from ..config import atomic_write_text, csv_text
    from ..data.check import check_manifest

    if out is not None:
        prepare_output_file(out, overwrite)
    with progress(len(manifest), "checking") as advance:
        report = check_manifest(manifest, min_side=min_size, progress=advance)
    for line in report.summary_lines():
        echo(line)
    if out is not None:
        atomic_write_text(out, csv_text(report.rejects_csv_rows()))
        echo(f"rejects written to {out}")
    if not report.clean:
        click.echo(f"error: {len(report.rejects)} of {report.n_images} images rejected "
                   f"(first: {next(iter(sorted(report.rejects.items())))})", err=True)
        sys.exit(2)


@main.command("demo-data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--n-per-class", type=int, default=60, show_default=True, help="Images per class and site.")
@click.option("--sites", type=int, default=2, show_default=True, help="Number of sites (stain/camera styles).")
@click.option("--size", type=int, default=96, show_default=True, help="Image side in pixels.")
@seed_option
@overwrite_option
def demo_data(out: Path, n_per_class: int, sites: int, size: int, seed: int, overwrite: bool) -> None:
    """Generate synthetic leukocyte-like cells (folder per class + manifest.csv).

    \b
    Example:
      hemoembed demo-data cells --n-per-class 60 --sites 2 --size 96 --seed 0
    """
    from ..data.synthetic import CLASSES, make_synthetic_dataset

    total = n_per_class * sites * len(CLASSES)
    with progress(total, "rendering") as advance:
        manifest = make_synthetic_dataset(out, n_per_class=n_per_class, sites=sites, size=size, seed=seed,
                                          overwrite=overwrite, progress=advance)
    echo(f"{total} images in {out}, manifest {manifest}")


@main.command("colour-reference")
@images_argument
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Reference JSON to write.")
@click.option("--sample", type=int, default=500, show_default=True, help="Images sampled for the statistics.")
@seed_option
@overwrite_option
def colour_reference(manifest, out: Path, sample: int, seed: int, overwrite: bool) -> None:
    """Compute Reinhard reference colour statistics (lαβ mean/std) from a set of images.

    \b
    Example:
      hemoembed colour-reference ../shared/data/pbc256 --out pbc_ref.json --sample 500
    """
    import numpy as np

    from ..data.colour import ReinhardReference
    from ..data.imageio import load_image

    prepare_output_file(out, overwrite)
    rng = np.random.default_rng(seed)
    paths = manifest.absolute()
    chosen = sorted(rng.choice(len(paths), size=min(sample, len(paths)), replace=False))
    with progress(len(chosen), "reading") as advance:
        images = []
        for i in chosen:
            images.append(load_image(paths[i]))
            advance(1)
    reference = ReinhardReference.from_images(images)
    reference.to_json(out)
    echo(f"reference from {len(images)} images: mean {np.round(reference.mean, 4).tolist()}, "
         f"std {np.round(reference.std, 4).tolist()} -> {out}")


@main.command()
@images_argument
@click.option("--method", type=click.Choice(["grayworld", "reinhard"]), required=True)
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="Reference JSON from colour-reference (required for reinhard).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for normalised PNG copies.")
@overwrite_option
def normalize(manifest, method: str, reference: Path | None, out: Path, overwrite: bool) -> None:
    """Write colour-normalised copies of images (same relative paths, PNG).

    \b
    Example:
      hemoembed normalize ../shared/data/bccd --method reinhard --reference pbc_ref.json --out bccd_norm
    """
    from ..data.colour import ReinhardReference, gray_world, reinhard_normalize
    from ..data.imageio import load_image, save_png
    from ..errors import InputError

    if method == "reinhard":
        if reference is None:
            raise InputError("--method reinhard needs --reference ref.json (see hemoembed colour-reference)")
        ref = ReinhardReference.from_json(reference)
        transform = lambda image: reinhard_normalize(image, ref)  # noqa: E731
    else:
        transform = gray_world
    prepare_output_dir(out, overwrite)
    written = []
    with progress(len(manifest), "normalising") as advance:
        for rel, path in zip(manifest.paths, manifest.absolute()):
            target = (out / rel).with_suffix(".png")
            save_png(transform(load_image(path)), target)
            written.append(target.relative_to(out).as_posix())
            advance(1)
    manifest.__class__(out, written, manifest.columns, str(out)).write_csv(out / "manifest.csv")
    echo(f"{len(written)} images normalised ({method}) into {out}, manifest {out / 'manifest.csv'}")
