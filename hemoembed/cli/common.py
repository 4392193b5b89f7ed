"""Shared click options and helpers so every command behaves the same way."""
from __future__ import annotations

import contextlib
import functools
import math
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import click

from ..errors import InputError


def allow_outside_root_option(help: str = "Allow manifest paths outside the image root.") -> Callable:
    """``--allow-outside-root``: manifest paths may leave their root (refused by default; data/manifest.py)."""
    return click.option("--allow-outside-root", is_flag=True, help=help)


def images_argument(func: Callable) -> Callable:
    """``IMAGES`` (folder or CSV manifest) with ``--image-root`` and ``--allow-outside-root``."""

    @click.argument("images", type=click.Path(path_type=Path))
    @click.option("--image-root", type=click.Path(path_type=Path), default=None,
                  help="Folder that a CSV manifest's 'path' column is relative to (default: the CSV's folder).")
    @allow_outside_root_option()
    @functools.wraps(func)
    def wrapper(*args, images: Path, image_root: Path | None, allow_outside_root: bool, **kwargs):
        from ..data.manifest import load_manifest

        manifest = load_manifest(images, image_root, allow_outside_root)
        return func(*args, manifest=manifest, **kwargs)

    return wrapper


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf (which compare false with every bound)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# Every numeric option declares its range here, so a bad value is refused before anything runs.
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
PIXELS = click.IntRange(16, 1024)  # an encoder input side (the preprocessing record's range)
POSITIVE_FLOAT = FiniteFloat(min=0.0, min_open=True)
NON_NEGATIVE_FLOAT = FiniteFloat(min=0.0)
FRACTION = FiniteFloat(0.0, 1.0, min_open=True, max_open=True)  # a share strictly between 0 and 1
UNIT = FiniteFloat(0.0, 1.0, max_open=True)  # an augmentation strength in [0, 1)

SEED = click.IntRange(0, 2**63 - 1)

seed_option = click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


def _apart(path: Path, inputs: Iterable, option: str) -> None:
    from ..data.manifest import ensure_apart

    for item in inputs:
        if item is not None and str(item):
            ensure_apart(path, item, option)


def prepare_output_dir(path: Path, overwrite: bool, *, allow_resume: bool = False, inputs: Iterable = (),
                       option: str = "--out") -> Path:
    """Create ``path``; refuse a non-empty existing folder unless ``overwrite`` (or resuming), and an output
    that is, contains or holds one of ``inputs`` (manifests or paths) even then."""
    path = Path(path)
    _apart(path, inputs, option)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not allow_resume:
        if not overwrite:
            raise InputError(f"{path}: output folder exists and is not empty (use --overwrite to replace it)")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def prepare_output_file(path: Path, overwrite: bool, *, inputs: Iterable = (), option: str = "--out") -> Path:
    """Refuse to replace an existing file unless ``overwrite``, or one of ``inputs`` ever; create its folder."""
    path = Path(path)
    _apart(path, inputs, option)
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: exists and is not a file")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: output file exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A stderr progress bar when stderr is a terminal (silent in logs and pipes); yields ``advance(n)``."""
    if not sys.stderr.isatty():
        yield lambda n=1: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True,
                           show_eta=True) as bar:
        yield bar.update


def given_options() -> set[str]:
    """The current command's parameters that the user set (on the command line or through the
    environment), as opposed to those left at their defaults."""
    from click.core import ParameterSource

    context = click.get_current_context()
    return {name for name in context.params
            if context.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}


def echo(message: str) -> None:
    click.echo(message)


def number_list(text: str, option: str, kind: type = float) -> list:
    """``"0.1,1,10"`` → ``[0.1, 1.0, 10.0]``: a comma-separated list of positive numbers for ``option``."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{option}: {text!r} is not a comma-separated list of {kind.__name__}s") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{option}: {text!r} must list positive numbers (example: 0.1,1,10)")
    return values


def deprecated(old: str, new: str) -> None:
    """Warn on stderr that the spelling ``old`` is kept one more release only; ``new`` is the name to use."""
    click.echo(f"warning: {old} is deprecated and goes in the next release; use {new}", err=True)


def deprecated_option(old: str, new: str, dest: str) -> Callable:
    """A hidden ``old`` flag (same values as ``new``) that warns and is merged into ``dest``."""

    def decorate(func: Callable) -> Callable:
        @click.option(old, "_old_" + dest, multiple=True, hidden=True, help=f"Deprecated spelling of {new}.")
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            values = kwargs.pop("_old_" + dest)
            if values:
                deprecated(old, new)
                kwargs[dest] = tuple(kwargs[dest]) + tuple(values)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def deprecated_command(group: click.Group, command: click.Command, old: str) -> None:
    """Register a hidden ``old`` name for ``command`` that warns before running it."""

    def callback(**kwargs):
        deprecated(f"'hemoembed {old}'", f"'hemoembed {command.name}'")
        return command.callback(**kwargs)

    group.add_command(click.Command(old, callback=callback, params=command.params, help=command.help,
                                    hidden=True, context_settings=command.context_settings))
