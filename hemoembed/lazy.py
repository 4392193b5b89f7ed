"""Names a package offers whose modules load on first use (PEP 562 module ``__getattr__``).

A command's cheap checks (paths, option values, headers) should answer before TensorFlow or scikit-learn
(seconds to import) load: a package that re-exports heavy names, or a facade such as
:mod:`hemoembed.app.lib`, hands them out through :func:`lazy_attributes` instead of importing them.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(module_name: str, sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``module_name``: ``sources`` maps a name to ``"module"`` (the same name
    there) or ``"module:attribute"``; the value is imported on first use and then kept on the module."""

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        module, _, attribute = source.partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        setattr(sys.modules[module_name], name, value)
        return value

    return __getattr__
