"""User-facing errors: one line, names what and where, exit code 2 in the CLI."""
from __future__ import annotations


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
