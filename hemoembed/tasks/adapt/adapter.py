"""Few-shot site adapter: Reinhard colour transfer to the source style, class-balanced shots, then a classifier.

A new site (microscope, camera, stain) brings at most ~100 labelled cells. Its images are first
Reinhard-normalised to the lαβ statistics of the source run's training images (a
:class:`~hemoembed.model.layers.ReinhardNormalization` layer inside an *adapted encoder*,
:func:`hemoembed.model.adapted.adapted_encoder`, so ``embed`` and ``predict`` see new images exactly as the
adapter did), then one of three modes learns the site:

* ``svm``: the frozen encoder's embeddings and the project's :class:`~hemoembed.tasks.svm.EmbeddingSVM`;
* ``head``: a softmax head on frozen embeddings;
* ``finetune``: encoder plus head trained on the shots (cross-entropy with label smoothing, Adam), the
  learning rate, epochs and batch size chosen by k-fold cross-validation inside the shots only. With
  ``warm_head`` the head starts from the ``head`` mode's fit on the frozen embeddings (linear probing, then
  fine-tuning: Kumar et al. 2022, "Fine-tuning can distort pretrained features"): a random head's first
  gradients no longer reach the encoder, which keeps the pretrained features from being torn apart.

Shots are chosen first; every image that is not a shot is a test image and reaches no training or
model-selection code (CV folds are index sets into the shots).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import keras
import numpy as np

from ...data.colour import ReinhardReference
from ...data.preprocess import PreprocessingRecord
from ...errors import InputError
from ...model.adapted import adapted_encoder

Mode = Literal["svm", "head", "finetune"]
MODES: tuple[str, ...] = ("svm", "head", "finetune")


def embed_arrays(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Embeddings (N, D) of preprocessed images with the model in inference mode."""
    from ...store.embed import make_forward

    forward = make_forward(model)
    out = [np.asarray(forward(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _one_hot(y_idx: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[np.asarray(y_idx)]


def _compile(model: keras.Model, lr: float, smoothing: float) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def fit_head(X: np.ndarray, y_idx: np.ndarray, k: int, *, lr: float = 1e-2, epochs: int = 200,
             smoothing: float = 0.1, seed: int = 0) -> keras.layers.Dense:
    """A softmax layer trained full-batch on frozen embeddings (the ``head`` mode)."""
    keras.utils.set_random_seed(int(seed))
    head = keras.layers.Dense(k, activation="softmax", name="head")
    model = keras.Sequential([keras.Input((X.shape[1],)), head])
    _compile(model, lr, smoothing)
    import tensorflow as tf

    full_batch = tf.data.Dataset.from_tensors((X, _one_hot(y_idx, k))).repeat()
    model.fit(full_batch, steps_per_epoch=int(epochs), epochs=1, verbose=0, shuffle=False)  # one epoch: less overhead
    return head


def classifier_model(encoder: keras.Model, head: keras.layers.Layer) -> keras.Model:
    """Image → class probabilities: the (adapted) encoder followed by a softmax head."""
    return keras.Model(encoder.input, head(encoder.output), name="hemoembed_site_classifier")


@dataclass
class FinetuneParams:
    """Fine-tuning hyper-parameters (one point of the CV grid)."""

    lr: float = 1e-4
    epochs: int = 10
    batch_size: int = 16


def _train_ds(images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    """Shuffled batches with random flips and quarter turns (cells have no orientation)."""
    import tensorflow as tf

    def augment(x, y):
        s = tf.random.uniform([2], 0, 2**30, dtype=tf.int32, seed=seed)
        x = tf.image.stateless_random_flip_left_right(x, s)
        x = tf.image.rot90(x, tf.random.uniform([], 0, 4, dtype=tf.int32))
        return x, y

    ds = tf.data.Dataset.from_tensor_slices((images, targets)).shuffle(len(images), seed=seed)
    return ds.map(augment).batch(batch_size)


def finetune(encoder: keras.Model, images: np.ndarray, y_idx: np.ndarray, k: int, params: FinetuneParams, *,
             smoothing: float = 0.1, seed: int = 0, bn_trainable: bool = False, warm_head: bool = False,
             validation: tuple[np.ndarray, np.ndarray] | None = None
             ) -> tuple[keras.Model, keras.Model, list[float]]:
    """Train a fresh copy of ``encoder`` plus a softmax head on the shots; returns ``(classifier, its
    fine-tuned encoder, val accuracy after every epoch)`` (empty without ``validation``). ``encoder`` itself
    is not changed. ``warm_head``: start the head from a fit on the copy's frozen embeddings of the shots."""
    from ...model.encoder import set_batchnorm_trainable

    keras.utils.set_random_seed(int(seed))
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    set_batchnorm_trainable(copy, bn_trainable)
    head = keras.layers.Dense(k, activation="softmax", name="head")
    model = classifier_model(copy, head)
    if warm_head:
        head.set_weights(fit_head(embed_arrays(copy, images), y_idx, k, smoothing=smoothing, seed=seed).get_weights())
    _compile(model, params.lr, smoothing)
    val = None if validation is None else (validation[0], _one_hot(validation[1], k))
    history = model.fit(_train_ds(images, _one_hot(y_idx, k), params.batch_size, seed), epochs=params.epochs,
                        validation_data=val, verbose=0, shuffle=False)  # the dataset shuffles itself
    return model, copy, [float(v) for v in history.history.get("val_accuracy", [])]


def choose_params(encoder: keras.Model, images: np.ndarray, y_idx: np.ndarray, k: int,
                  grid: dict[str, Sequence[Any]], folds: int, *, smoothing: float = 0.1, seed: int = 0,
                  bn_trainable: bool = False, warm_head: bool = False) -> tuple[FinetuneParams, dict[str, Any]]:
    """Pick lr × batch size × epochs by stratified k-fold CV on the shots (``images`` are the shots only).

    Each (lr, batch size) trains once per fold for the largest epoch count; the validation accuracy after
    each candidate epoch count is read from the same run. Returns the best point and the CV record, whose
    folds are index sets into the shots.
    """
    from ..common.splits import cv_splits

    points = [(lr, b) for lr in grid["lr"] for b in grid["batch_size"]]
    epochs = sorted({int(e) for e in grid["epochs"]})
    splits = (cv_splits([str(v) for v in y_idx], folds, seed=seed, rare_classes=True)
              if len(points) * len(epochs) > 1 else [])
    if not splits:
        best = FinetuneParams(float(points[0][0]), epochs[-1], int(points[0][1]))
        return best, {"folds": [], "scores": [], "chosen": vars(best),
                      "note": "no CV (one grid point or too few shots)"}
    scores = []
    for lr, batch in points:
        per_fold = []
        for f, (tr, va) in enumerate(splits):
            _, _, acc = finetune(encoder, images[tr], y_idx[tr], k, FinetuneParams(lr, epochs[-1], batch),
                              smoothing=smoothing, seed=seed + f, bn_trainable=bn_trainable,
                              warm_head=warm_head, validation=(images[va], y_idx[va]))
            per_fold.append([acc[e - 1] for e in epochs])
        mean = np.mean(per_fold, axis=0)
        scores += [{"lr": lr, "batch_size": batch, "epochs": e, "cv_accuracy": float(m)}
                   for e, m in zip(epochs, mean, strict=True)]
    best = best_point(scores)
    return best, {"folds": [{"train": tr.tolist(), "validation": va.tolist()} for tr, va in splits],
                  "scores": scores, "chosen": vars(best)}


def best_point(scores: Sequence[dict[str, Any]]) -> FinetuneParams:
    """The grid point of ``scores`` (``lr``, ``batch_size``, ``epochs``, ``cv_accuracy``) with the best mean CV
    accuracy; among equals the fewest epochs (cheaper, and less room to overfit a few shots), then the first."""
    top = max(scores, key=lambda s: (s["cv_accuracy"], -s["epochs"]))
    return FinetuneParams(float(top["lr"]), int(top["epochs"]), int(top["batch_size"]))


@dataclass
class Outcome:
    """One adaptation: test probabilities (columns ``classes``) and what produced them."""

    classes: list[str]
    proba: np.ndarray
    encoder: keras.Model | None = None
    svm: Any = None
    classifier: keras.Model | None = None
    cv: dict[str, Any] = field(default_factory=dict)


class SiteExperiment:
    """A source encoder and a labelled target site (preprocessed pixels, class names already mapped).

    :meth:`run` performs one adaptation on given shot/test indices; frozen embeddings are cached per colour
    setting, so ablation conditions and repeats share them.
    """

    def __init__(self, source: keras.Model, record: PreprocessingRecord, reference: ReinhardReference | None,
                 images: np.ndarray, labels: Sequence[str], *, batch_size: int = 64) -> None:
        self.source, self.record, self.reference = source, record, reference
        self.images, self.labels = images, np.asarray([str(v) for v in labels])
        self.batch_size = batch_size
        self._frozen: dict[bool, tuple[keras.Model, np.ndarray]] = {}

    def encoder(self, colour: bool = True, pretrained: bool = True) -> keras.Model:
        """The adapted encoder (``pretrained=False``: same architecture, random weights, BN trainable)."""
        from ...model.encoder import build_encoder

        if colour and self.reference is None:
            raise InputError("colour transform requested but no source colour reference is known")
        base = self.source if pretrained else build_encoder(self.record, "none", freeze_bn=False)
        return adapted_encoder(base, self.record, self.reference if colour else None)[0]

    def frozen(self, colour: bool = True) -> tuple[keras.Model, np.ndarray]:
        """(adapted frozen encoder, embeddings of every site image), cached."""
        if colour not in self._frozen:
            model = self.encoder(colour)
            self._frozen[colour] = (model, embed_arrays(model, self.images, self.batch_size))
        return self._frozen[colour]

    def run(self, mode: str, shots: np.ndarray, test: np.ndarray, *, colour: bool = True, pretrained: bool = True,
            support: tuple[np.ndarray, Sequence[str]] | None = None, grid: dict[str, Sequence[Any]] | None = None,
            folds: int = 3, smoothing: float = 0.1, head_epochs: int = 200, warm_head: bool = False,
            seed: int = 0) -> Outcome:
        """Adapt on ``shots`` and predict ``test`` (indices into the site; may be empty). ``support``: extra
        source (embeddings, labels) for the SVM; ``warm_head``: see :func:`finetune`. Test rows are only ever
        passed to prediction."""
        from ..svm.estimator import EmbeddingSVM

        if mode not in MODES:
            raise InputError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
        y = self.labels[shots]
        classes, index = classes_and_index(y)
        if mode == "finetune":
            enc = self.encoder(colour, pretrained)
            grid = grid or {"lr": [1e-4], "epochs": [10], "batch_size": [16]}
            params, cv = choose_params(enc, self.images[shots], index(y), len(classes), grid, folds,
                                       smoothing=smoothing, seed=seed, bn_trainable=not pretrained,
                                       warm_head=warm_head and pretrained)
            model, tuned, _ = finetune(enc, self.images[shots], index(y), len(classes), params, smoothing=smoothing,
                                       seed=seed, bn_trainable=not pretrained, warm_head=warm_head and pretrained)
            proba = (model.predict(self.images[test], batch_size=self.batch_size, verbose=0) if len(test)
                     else np.zeros((0, len(classes)), np.float32))
            return Outcome(classes, proba, tuned, classifier=model, cv=cv)
        enc, X = self.frozen(colour)
        if mode == "head":
            head = fit_head(X[shots], index(y), len(classes), epochs=head_epochs, smoothing=smoothing, seed=seed)
            model = classifier_model(enc, head)
            return Outcome(classes, np.asarray(head(X[test])), enc, classifier=model)
        X_fit, y_fit = X[shots], list(y)
        if support is not None:
            X_fit, y_fit = np.concatenate([X_fit, support[0]]), y_fit + [str(v) for v in support[1]]
        svm = EmbeddingSVM(random_state=seed).fit(X_fit, y_fit)
        proba = svm.predict_proba(X[test]) if len(test) else np.zeros((0, len(svm.classes_)))
        return Outcome(svm.classes_.tolist(), proba, enc, svm=svm)


def classes_and_index(y: Sequence[str]) -> tuple[list[str], Callable[[Sequence[str]], np.ndarray]]:
    """Sorted class names and a function from names to their indices."""
    classes = sorted(set(map(str, y)))
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, lambda names: np.asarray([lookup[str(n)] for n in names], dtype=np.int64)
