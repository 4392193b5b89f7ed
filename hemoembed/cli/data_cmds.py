"""Data commands: check, demo-data, colour-reference, normalize."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import (
    POSITIVE,
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
              help="Write every finding (rejected files, duplicates) with its reason to this CSV.")
@click.option("--min-size", type=click.IntRange(min=16), default=16, show_default=True,
              help="Reject images with a side below this (at least 16: smaller images are never usable).")
@click.option("--strict", is_flag=True, help="Treat warnings (duplicates, ignored non-image files) as errors.")
@overwrite_option
def check(manifest, out: Path | None, min_size: int, strict: bool, overwrite: bool) -> None:
    """Check a dataset: classes, sizes, unreadable/truncated/empty/tiny files, duplicates.

    Exits 2 when a file cannot be used. Byte-identical copies of another file are listed as a warning
    (exit 0); --strict makes every finding an error.

    \b
    Example:
      hemoembed check ../shared/data/bccd --out rejects.csv
      hemoembed check ../shared/data/wbcatt/pbc_attr_v1_test.csv --image-root ../shared/data/pbc256
    """
    from ..config import atomic_write_text, csv_text
    from ..data.check import check_manifest
    from ..errors import InputError

    if out is not None:
        prepare_output_file(out, overwrite, inputs=[manifest])
    with progress(len(manifest), "checking") as advance:
        report = check_manifest(manifest, min_side=min_size, progress=advance)
    for line in report.summary_lines():
        echo(line)
    warnings = report.warning_lines()
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    if out is not None:
        atomic_write_text(out, csv_text(report.rejects_csv_rows()))
        echo(f"findings written to {out}")
    if not report.clean:
        raise InputError(report.error_line())
    if strict and warnings:
        raise InputError(f"--strict: {len(report.duplicates)} duplicate(s) and {len(report.ignored_files)} ignored "
                         "non-image file(s) count as errors (see the warnings above).")


@main.command("demo-data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--n-per-class", type=POSITIVE, default=60, show_default=True, help="Images per class and site.")
@click.option("--sites", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Number of sites (stain/camera styles).")
@click.option("--size", type=click.IntRange(32, 1024), default=96, show_default=True, help="Image side in pixels.")
@seed_option
@overwrite_option
def demo_data(out: Path, n_per_class: int, sites: int, size: int, seed: int, overwrite: bool) -> None:
    """Generate synthetic leukocyte-like cells (folder per class, manifest.csv, one site<k>.csv per site).

    \b
    Example:
      hemoembed demo-data cells --n-per-class 60 --sites 2 --size 96 --seed 0
    """
    from ..data.synthetic import CLASSES, make_synthetic_dataset

    total = n_per_class * sites * len(CLASSES)
    manifest = make_synthetic_dataset(out, n_per_class=n_per_class, sites=sites, size=size, seed=seed,
                                      overwrite=overwrite, progress=progress)
    echo(f"{total} images in {out}, manifest {manifest}")


@main.command("colour-reference")
@images_argument
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Reference JSON to write.")
@click.option("--sample", type=POSITIVE, default=500, show_default=True, help="Images sampled for the statistics.")
@seed_option
@overwrite_option
def colour_reference(manifest, out: Path, sample: int, seed: int, overwrite: bool) -> None:
    """Compute Reinhard reference colour statistics (lαβ mean/std) from a set of images.

    \b
    Example:
      hemoembed colour-reference ../shared/data/pbc256 --out pbc_ref.json --sample 500
    """
    import numpy as np

    from ..data.normalise import sample_reference

    prepare_output_file(out, overwrite, inputs=[manifest])
    reference, n = sample_reference(manifest, sample, seed, progress=progress)
    reference.to_json(out)
    echo(f"reference from {n} images: mean {np.round(reference.mean, 4).tolist()}, "
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
    from ..data.colour import ReinhardReference
    from ..data.manifest import ensure_apart
    from ..data.normalise import check_method, normalised_copies

    check_method(method, reference)
    ref = ReinhardReference.from_json(reference) if method == "reinhard" else None
    ensure_apart(out, manifest, writes_images=True)  # --overwrite would delete the images being read
    prepare_output_dir(out, overwrite, inputs=[reference])
    written = normalised_copies(manifest, method, out, ref, progress=progress)
    echo(f"{len(manifest)} images normalised ({method}) into {out}, manifest {written}")
