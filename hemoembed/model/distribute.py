"""Devices and numerics for training: ``tf.distribute`` strategies and Keras precision policies."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any, Literal

from ..errors import InputError

StrategyName = Literal["auto", "one", "mirrored", "multiworker"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def make_strategy(name: str) -> Any:
    """``one``: one device (the first GPU, else the CPU); ``mirrored``: every local GPU (or every logical
    CPU when there is no GPU); ``multiworker``: ``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``;
    ``auto``: ``mirrored`` when more than one GPU is visible, else ``one``."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise InputError(f"--strategy {name!r} is not one of {', '.join(STRATEGIES)}")
    if name == "multiworker":  # before anything starts TensorFlow's runtime (listing devices does)
        if "TF_CONFIG" not in os.environ:
            raise InputError("--strategy multiworker needs the TF_CONFIG environment variable (cluster and task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one"
    if name == "one":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)  # mirrored: every local GPU, or every logical CPU


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process as a non-chief worker (only the chief writes files)."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except json.JSONDecodeError:
        raise InputError("TF_CONFIG is not valid JSON") from None
    kind, index = task.get("type"), int(task.get("index", 0))
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Set Keras's global dtype policy for the duration of a run, then restore the previous one."""
    import keras

    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
