"""User-facing errors: one line, names what and where, exit code 2 in the CLI."""
from __future__ import annotations

from collections.abc import Callable


class HemoembedError(Exception):
    """Bad input or refused operation; the CLI prints ``str(self)`` on one line and exits 2."""

    exit_code = 2


class InputError(HemoembedError, ValueError):
    """An input file, column, value or option is wrong."""


class MismatchError(HemoembedError):
    """Two artefacts do not belong together (store vs encoder, model vs store, resume vs config)."""


def one_line(message: str) -> str:
    """Collapse a message to one line so the CLI never prints a multi-line error."""
    return " ".join(str(message).split())


def script_main(main: Callable[[], object]) -> None:
    """Run a figure script's ``main`` as the CLI runs a command: a :class:`HemoembedError` prints one line on
    stderr and exits 2, never a traceback."""
    import sys

    try:
        main()
    except HemoembedError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
