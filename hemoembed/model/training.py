"""The train/validation steps under ``tf.distribute``, the learning-rate schedule, resumable state.

The loss (semi-hard or hard triplet, or NT-Xent) sees the encoder's embeddings, or a projection head's output
when the run has one (:mod:`.heads`). Mining and the contrastive softmax must see the global batch: each
replica embeds its share of the views, then embeddings and labels are all-gathered (in replica order, i.e. the
dataset's order) and every replica computes the loss of the whole batch. Gradient scaling: the gradient of
``all_gather`` sums the upstream gradients of all R replicas (each equal to dL/dE, since every replica
computes the same L) before slicing its own rows, so each replica sees R·dL/dE_own; the optimizer then sums
the replicas' parameter gradients. Dividing the loss by R before differentiation therefore gives exactly
dL/dθ, the single-device gradient.
"""
from __future__ import annotations

import io
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..config import atomic_write_bytes
from ..errors import InputError, MismatchError
from .contrastive import ntxent_loss
from .layers import L2Normalize
from .losses import triplet_hard_loss, triplet_semihard_loss

LOSSES = ("semihard", "hard", "ntxent", "dcl")


@keras.saving.register_keras_serializable(package="hemoembed")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then constant or cosine decay to 0 at
    ``total_steps``; a constant rate may end with a linear cool-down to 0 over the last ``cooldown_steps``
    (warmup-stable-decay); multiplied by ``factor`` (a variable that LR-on-plateau lowers)."""

    def __init__(self, base_lr: float, warmup_steps: int, total_steps: int, decay: str = "constant",
                 factor: Any = None, cooldown_steps: int = 0) -> None:
        self.base_lr, self.warmup_steps = float(base_lr), int(warmup_steps)
        self.total_steps, self.decay = max(int(total_steps), 1), decay
        self.factor, self.cooldown_steps = factor, int(cooldown_steps)

    def __call__(self, step: Any) -> Any:
        from keras import ops

        step = ops.cast(step, "float32")
        warm = ops.minimum((step + 1.0) / max(self.warmup_steps, 1), 1.0) if self.warmup_steps else 1.0
        if self.decay == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            warm = warm * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.cooldown_steps:
            warm = warm * ops.clip((self.total_steps - step) / self.cooldown_steps, 0.0, 1.0)
        factor = 1.0 if self.factor is None else ops.cast(self.factor, "float32")
        return self.base_lr * warm * factor

    def get_config(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "decay": self.decay, "cooldown_steps": self.cooldown_steps}


def loss_function(loss: str, *, margin: float = 0.5, distance: str = "L2", temperature: float = 0.2) -> Any:
    """``loss(labels, embeddings)`` for a loss name: semi-hard/hard triplet (tfa parity), NT-Xent or DCL."""
    if loss in ("ntxent", "dcl"):
        return partial(ntxent_loss, temperature=temperature, decoupled=loss == "dcl")
    if loss in ("semihard", "hard"):
        base = triplet_semihard_loss if loss == "semihard" else triplet_hard_loss
        return partial(base, margin=margin, distance=distance)
    raise InputError(f"--loss {loss!r} is not one of {', '.join(LOSSES)}")


class EmbeddingTrainer:
    """An encoder, an optional projection head, the optimizer and compiled distributed steps;
    ``state``/``restore`` for checkpoints. ``head_fn`` builds the head (or returns ``None``)."""

    def __init__(self, model_fn: Any, strategy: Any, *, lr: float, warmup_steps: int, total_steps: int,
                 decay: str, loss: str, cooldown_steps: int = 0, margin: float = 0.5, distance: str = "L2",
                 temperature: float = 0.2,
                 head_fn: Any = None, weight_decay: float = 0.0, precision: str = "float32", jit: bool = False,
                 eager: bool = False) -> None:
        import tensorflow as tf

        self.loss_fn = loss_function(loss, margin=margin, distance=distance, temperature=temperature)
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        with strategy.scope():
            self.model = model_fn()
            self.head = head_fn() if head_fn is not None else None
            # triplet margins are distances between unit vectors: a head's output is normalised for them too
            triplet = loss in ("semihard", "hard")
            self.head_norm = L2Normalize(dtype="float32") if self.head is not None and triplet else None
            self.lr_factor = keras.Variable(1.0, trainable=False, name="lr_factor")
            self.schedule = WarmupCosine(lr, warmup_steps, total_steps, decay, self.lr_factor, cooldown_steps)
            if weight_decay > 0:
                optimizer = keras.optimizers.AdamW(learning_rate=self.schedule, weight_decay=weight_decay)
            else:
                optimizer = keras.optimizers.Adam(learning_rate=self.schedule)
            if precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.trainable_variables)
            self.optimizer = optimizer
        train, evaluate = self._replica_train, self._replica_eval
        if not eager:
            train = tf.function(train, jit_compile=jit)
            evaluate = tf.function(evaluate, jit_compile=jit)
        self._train_replica, self._eval_replica = train, evaluate
        run = (lambda f: f) if eager else (lambda f: tf.function(f))
        self._train = run(lambda views, labels: self._reduce(strategy.run(self._train_replica, (views, labels))))
        self._eval = run(lambda views, labels: self._reduce(strategy.run(self._eval_replica, (views, labels))))

    def _gathered_loss(self, views: Any, labels: Any, training: bool) -> Any:
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        embeddings = self.model(views, training=training)
        if self.head is not None:
            embeddings = self.head(embeddings, training=training)
            embeddings = self.head_norm(embeddings) if self.head_norm is not None else embeddings
        all_labels = context.all_gather(tf.stop_gradient(labels), axis=0)
        return self.loss_fn(all_labels, context.all_gather(embeddings, axis=0))

    def _replica_train(self, views: Any, labels: Any) -> Any:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = self._gathered_loss(views, labels, training=True)
            scaled = self.optimizer.scale_loss(loss / self.replicas)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss

    def _replica_eval(self, views: Any, labels: Any) -> Any:
        return self._gathered_loss(views, labels, training=False)

    def _reduce(self, per_replica: Any) -> Any:
        import tensorflow as tf

        return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    def train_batch(self, views: Any, labels: Any) -> float:
        """One optimisation step on one global batch (split across the replicas); returns its loss."""
        return self.run_epoch(_one_batch(views, labels), train=True)[0]

    def eval_batch(self, views: Any, labels: Any) -> float:
        """The loss of one global batch in inference mode (dropout off, BN statistics used)."""
        return self.run_epoch(_one_batch(views, labels), train=False)[0]

    def run_epoch(self, dataset: Any, train: bool, progress: Any = None) -> tuple[float, int]:
        """Mean loss over a tf.data dataset of (views, labels) global batches, and the number of batches."""
        step = self._train if train else self._eval
        total, count = 0.0, 0
        for views, labels in self.strategy.experimental_distribute_dataset(dataset):
            total += float(step(views, labels))
            count += 1
            if progress is not None:
                progress(1)
        return (total / count if count else float("nan")), count

    @property
    def trainable_variables(self) -> list[Any]:
        """The encoder's and the head's trainable variables, in that order."""
        head = list(self.head.trainable_variables) if self.head is not None else []
        return [*self.model.trainable_variables, *head]

    @property
    def learning_rate(self) -> float:
        return float(self.schedule(self.optimizer.iterations))

    # ------------------------------------------------------------------ resumable state

    def _variables(self) -> list[Any]:
        head = list(self.head.variables) if self.head is not None else []
        return [*self.model.variables, *head, *self.optimizer.variables, self.lr_factor]

    def state(self) -> dict[str, np.ndarray]:
        """Every variable the run depends on (weights, BN statistics, dropout seeds, optimizer, LR factor)."""
        return {f"v{i:05d}": np.asarray(keras.ops.convert_to_numpy(v.value)) for i, v in enumerate(self._variables())}

    def restore(self, arrays: dict[str, np.ndarray], where: str) -> None:
        variables = self._variables()
        if len(arrays) != len(variables):
            raise MismatchError(f"{where}: checkpoint holds {len(arrays)} variables, this run has {len(variables)}")
        for i, variable in enumerate(variables):
            value = arrays[f"v{i:05d}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise MismatchError(f"{where}: variable {variable.path} has shape {tuple(variable.shape)}, "
                                    f"checkpoint {tuple(value.shape)}")
            variable.assign(value)


def _one_batch(views: Any, labels: Any) -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((views, labels))


def save_checkpoint(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """One ``.npz`` (no pickle) holding the arrays and a JSON ``meta`` record, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
            meta = json.loads(data["__meta__"].tobytes().decode())
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: unreadable checkpoint ({str(exc)[:120]})") from None
    return arrays, meta
