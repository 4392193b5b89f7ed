"""The ``hemoembed`` command line: a thin click layer over the library.

Every command lives in a ``*_cmds`` module of this package and attaches itself to :data:`main`. Errors
that are the user's print one line on stderr and exit 2: :class:`hemoembed.errors.HemoembedError`, click's
usage errors (an option out of its range, an unknown option or command), and operating-system errors (a
full disk, a file that cannot be read or written); ``--debug`` shows the traceback instead.
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
    """A click group that turns library, usage and operating-system errors into one line and exit code 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # the group's own options
            if "--debug" in args or os.environ.get("HEMOEMBED_DEBUG") == "1":
                raise
            _fail(_usage(exc), 2)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HemoembedError as exc:
            if _debug(ctx):
                raise
            _fail(str(exc), exc.exit_code)
        except click.ClickException as exc:
            if _debug(ctx):
                raise
            _fail(_usage(exc), 2)
        except OSError as exc:  # a full disk, a read-only folder, a file that vanished
            if _debug(ctx):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or exc} (errno {exc.errno}; files already written are intact)", 2)
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            click.echo("interrupted: outputs written so far are intact; rerun with --resume where offered", err=True)
            sys.exit(130)


def _usage(exc: click.ClickException) -> str:
    """A click error as one sentence, pointing at the command's --help."""
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{exc.format_message().rstrip('.')}{hint}"


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


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
    if not (_debug(ctx) or sys.warnoptions):
        import warnings

        warnings.simplefilter("ignore")  # library chatter (joblib, Keras) would break the one-line error rule


for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
