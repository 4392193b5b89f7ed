"""How hemoembed meets TensorFlow and Keras without importing them itself.

``import hemoembed`` must stay light (no TensorFlow: ``hemoembed --help`` answers at once), yet two things
have to hold whenever TensorFlow or Keras *do* load later, whoever imports them:

* their C++ start-up chatter stays off stderr (CLI errors are one line), unless ``TF_CPP_MIN_LOG_LEVEL``
  is set to ``0``;
* hemoembed's Keras layers and losses are registered as soon as Keras is loaded, so
  ``keras.saving.load_model(path, safe_mode=True)`` finds them after ``import hemoembed``.

:func:`install` adds one finder to ``sys.meta_path`` that wraps only the top-level ``tensorflow`` and
``keras`` modules' ``exec_module`` (their loaders are otherwise untouched).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys

_WATCHED = ("tensorflow", "keras")
REGISTERING_MODULE = "hemoembed.model.registry"  # importing it registers the layers and losses


@contextlib.contextmanager
def _stderr_silenced():
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (e.g. captured in a notebook)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _register_keras_objects() -> None:
    importlib.import_module(REGISTERING_MODULE)


class _Finder:
    """A meta-path finder that only decorates the specs of ``tensorflow`` and ``keras``."""

    def find_spec(self, name, path=None, target=None):
        if name not in _WATCHED:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            with _stderr_silenced():
                original(module)
            if name == "keras":
                _register_keras_objects()

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Install the finder once; when Keras is already loaded, register hemoembed's objects now."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    if "keras" in sys.modules:
        _register_keras_objects()
