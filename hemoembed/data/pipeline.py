"""tf.data pipelines: parallel read → decode → preprocess → batch → prefetch, no per-image Python.

Files that fail to decode inside the graph are dropped by ``ignore_errors``; every element carries its
manifest index so the caller can name exactly which files were dropped.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from .imageio import decode_rgb_tf
from .preprocess import (
    PreprocessingRecord,
    finish_batch_tf,
    finishes_batches,
    prepare_bytes_tf,
    preprocess_tf,
    resize_tf,
)

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow at module import


def decoded_dataset(paths: Sequence[str], *, num_parallel_calls: int = AUTOTUNE, deterministic: bool = True):
    """Dataset of ``(uint8 image (H, W, 3), index)`` for ``paths``; undecodable files are skipped."""
    return _files_dataset(paths, decode_rgb_tf, num_parallel_calls=num_parallel_calls, deterministic=deterministic)


def _files_dataset(paths: Sequence[str], load, *, num_parallel_calls: int = AUTOTUNE, deterministic: bool = True):
    """``(load(file bytes), index)`` for ``paths``, read and loaded in parallel; a file whose ``load`` fails
    (an undecodable image, a refused header) is skipped."""
    import tensorflow as tf

    indices = tf.range(len(paths), dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(list(paths), tf.string), indices))
    ds = ds.map(lambda path, index: (load(tf.io.read_file(path)), index), num_parallel_calls=num_parallel_calls,
                deterministic=deterministic)
    return ds.ignore_errors()


def inference_dataset(paths: Sequence[str], record: PreprocessingRecord, batch_size: int = 64, *,
                      shuffle_seed: int | None = None):
    """Batches of ``(float32 images (B, S, S, 3) in [0, 255], int64 indices (B,))`` ready for an encoder.

    The record's one path (:mod:`.preprocess`): read, decode at the record's scale and crop/resize each image
    in parallel, then finish each batch (version 2's gray world) and prefetch, so input work overlaps the
    encoder. Undecodable files are skipped (compare the indices). ``shuffle_seed``: seeded order (training).
    """
    import tensorflow as tf

    prepare, finish = _record_functions(record)
    ds = _files_dataset(paths, prepare)
    if shuffle_seed is not None:
        ds = ds.shuffle(min(len(paths), 2048), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if not finishes_batches(record):
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = ds.map(lambda images, index: (finish(images), index), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


@lru_cache(maxsize=16)
def _record_functions(record: PreprocessingRecord):
    """The record's per-image and per-batch steps as ``tf.function``s with fixed signatures, traced once per
    record: a dataset built for every small batch (the review app embeds each upload batch with a pipeline of
    its own) then calls the traced graphs instead of tracing the decode and crop again (about 0.07 CPU s per
    dataset on 2 cores, more than embedding 16 small images)."""
    import tensorflow as tf

    side = int(record.image_size)
    prepare = tf.function(lambda data: prepare_bytes_tf(data, record), input_signature=[tf.TensorSpec([], tf.string)])
    finish = tf.function(lambda images: finish_batch_tf(images, record),
                         input_signature=[tf.TensorSpec([None, side, side, 3], tf.float32)])
    return prepare, finish


# --------------------------------------------------------------------------- multi-view training data


def augmentation_side(record: PreprocessingRecord) -> int:
    """Side at which training images are augmented: the record's crop is taken after augmentation.

    An image is brought to a square of ``image_size / crop_fraction`` px (the central square of its shorter
    side, resized), augmented there, then centre-cropped to ``crop_fraction`` and resized to
    ``image_size``: the same geometry :func:`preprocess_tf` applies at inference.
    """
    return max(int(record.image_size), round(record.image_size / record.crop_fraction))


def _training_image(data, record: PreprocessingRecord, side: int):
    """Encoded image bytes → colour-normalised float32 square (side, side, 3) in [0, 255].

    Decoded as the record decodes for inference, so training and embedding see an image the same way:
    version 1 fully (then colour, then the resize); version 2 the central square, a JPEG at the coarsest DCT
    scale that keeps ``side`` px (a scaled decode differs a little from a full one), resized, then gray
    world with the means of the region the encoder will see.
    """
    from .imageio import decode_central_crop_tf
    from .preprocess import central_crop_tf

    if record.version == 1:
        return resize_tf(central_crop_tf(preprocess_tf(decode_rgb_tf(data), record, crop=False), 1.0), side, record)
    return preprocess_tf(resize_tf(decode_central_crop_tf(data, 1.0, side), side, record), record, crop=False)


def _crop_to_record(images, record: PreprocessingRecord):
    """The record's central crop and resize, applied to an augmented batch."""
    from .preprocess import central_crop_tf

    return resize_tf(central_crop_tf(images, record.crop_fraction), int(record.image_size), record)


def cache_training_images(paths: Sequence[str], record: PreprocessingRecord, progress=None):
    """Decode and colour-normalise every image once into a CPU ``tf.Variable`` (uint8, N×side×side×3).

    Returns ``(variable, kept)`` where ``kept`` lists the positions in ``paths`` that decoded (the
    variable's rows, in order). A variable, not a constant, so the graph never embeds the pixels.
    """
    import numpy as np
    import tensorflow as tf

    side = augmentation_side(record)
    ds = _files_dataset(paths, lambda data: tf.cast(tf.round(_training_image(data, record, side)), tf.uint8))
    ds = ds.batch(256)
    chunks, kept = [], []
    for images, indices in ds:
        chunks.append(images.numpy())
        kept.extend(indices.numpy().tolist())
        if progress is not None:
            progress(len(indices))
    pixels = np.concatenate(chunks) if chunks else np.zeros((0, side, side, 3), np.uint8)
    with tf.init_scope(), tf.device("CPU:0"):
        variable = tf.Variable(pixels, trainable=False, name="cached_images")
    return variable, kept


def multi_view_dataset(paths: Sequence[str], labels: Sequence[int], record: PreprocessingRecord, augment,
                       batch_size: int, seed: int, stream: int, *, views: int = 2, shuffle: bool = True,
                       cache=None, drop_remainder: bool = True):
    """Batches of ``(views (VB, S, S, 3) float32 in [0, 255], labels (VB,) int64)`` for the pretraining losses.

    Each batch holds ``batch_size`` distinct images; rows ``Vk`` to ``Vk + V - 1`` are ``views`` (V)
    independently augmented views of image k and share its label (``labels``: one distinct integer per
    image, its identity), so online mining finds exactly V - 1 positives per anchor (one with two views).
    The order (when ``shuffle``) and every augmentation draw derive from ``(seed, stream)`` — use the epoch
    number as ``stream`` — so an epoch is reproducible, in a resumed run too. ``augment`` is an
    :class:`~.augment.AugmentConfig`.
    ``cache``: the variable from :func:`cache_training_images` (its rows aligned with ``paths``).
    """
    import numpy as np
    import tensorflow as tf

    from .augment import augment_batch, build_augmentation, crops_to_output

    layers = build_augmentation(augment, record.image_size, record.crop_fraction)
    crop = not crops_to_output(augment)  # a random-resized crop already produced the record's size
    order = np.random.default_rng([int(seed), int(stream) + 2**20]).permutation(len(paths)) if shuffle \
        else np.arange(len(paths))
    ids = tf.constant(np.asarray(labels, np.int64)[order])
    if cache is None:
        side = augmentation_side(record)
        files = tf.constant([str(paths[i]) for i in order], tf.string)
        ds = tf.data.Dataset.from_tensor_slices((files, ids)).map(
            lambda path, label: (_training_image(tf.io.read_file(path), record, side), label),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        rows = tf.data.Dataset.from_tensor_slices((tf.constant(order, tf.int64), ids))
        ds = rows.batch(batch_size, drop_remainder=drop_remainder).map(
            lambda row, label: (tf.cast(tf.gather(cache, row), tf.float32), label),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    copies = int(views)

    def augmented_views(batch_no, batch):
        images, label = batch
        batch_seed = tf.stack([tf.constant(int(seed), tf.int64), tf.constant(int(stream), tf.int64) * 2**24 + batch_no])
        out = augment_batch(tf.repeat(images, copies, axis=0), layers, batch_seed)
        return (_crop_to_record(out, record) if crop else out), tf.repeat(label, copies)

    ds = ds.enumerate().map(augmented_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``n`` unlabelled images into (train, validation) positions, each sorted."""
    import numpy as np

    n_val = round(n * float(fraction))
    perm = np.random.default_rng([int(seed), 7]).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())
