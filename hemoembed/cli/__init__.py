"""The ``hemoembed`` command line: a thin click layer over the library.

Every command lives in a ``*_cmds`` module of this package and attaches itself to :data:`main`. Errors
that are the user's (:class:`hemoembed.errors.HemoembedError`) print one line and exit 2; ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from .._version import __version__
from ..errors import HemoembedError, one_line

_COMMAND_MODULES = (
    "data_cmds",
    "svm_cmds",
    "store_cmds",
    "pretrain_cmds",
    "explain_cmds",
    "adapt_cmds",
    "active_cmds",
    "probe_cmds",
    "serve_cmds",
)


class _Group(click.Group):
    """A click group that turns library errors into one line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HemoembedError as exc:
            if _debug(ctx):
                raise
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            click.echo("interrupted: outputs written so far are intact; rerun with --resume where offered", err=True)
            sys.exit(130)


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("HEMOEMBED_DEBUG") == "1"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hemoembed")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Learn a morphological embedding of leukocyte crops without labels, then label with few.

    \b
    Example (synthetic demo data, CPU):
      hemoembed demo-data cells --n-per-class 60
      hemoembed check cells
    """
    ctx.obj = {"debug": debug}


for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
