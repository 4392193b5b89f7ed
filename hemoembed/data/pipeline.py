"""tf.data pipelines: parallel read → decode → preprocess → batch → prefetch, no per-image Python.

Files that fail to decode inside the graph are dropped by ``ignore_errors``; every element carries its
manifest index so the caller can name exactly which files were dropped.
"""
from __future__ import annotations

from collections.abc import Sequence

from .imageio import decode_rgb_tf
from .preprocess import PreprocessingRecord, preprocess_tf

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow at module import


def decoded_dataset(paths: Sequence[str], *, num_parallel_calls: int = AUTOTUNE, deterministic: bool = True):
    """Dataset of ``(uint8 image (H, W, 3), index)`` for ``paths``; undecodable files are skipped."""
    import tensorflow as tf

    indices = tf.range(len(paths), dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(list(paths), tf.string), indices))

    def load(path, index):
        return decode_rgb_tf(tf.io.read_file(path)), index

    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    return ds.ignore_errors()


def inference_dataset(paths: Sequence[str], record: PreprocessingRecord, batch_size: int = 64):
    """Batches of ``(float32 images (B, S, S, 3) in [0, 255], int64 indices (B,))`` ready for an encoder."""
    import tensorflow as tf

    ds = decoded_dataset(paths)
    ds = ds.map(lambda image, index: (preprocess_tf(image, record), index),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
