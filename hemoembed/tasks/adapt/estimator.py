"""The site adapter as a scikit-learn estimator, for a notebook: ``SiteAdapter.from_run(run).fit(images,
labels).predict(new_images)``.

It does what ``hemoembed adapt`` does on its shots (Reinhard transfer to the run's colour style inside an
adapted encoder, then an SVM, a softmax head or fine-tuning), with every given image a shot: evaluation
and the ablation study stay with :func:`~.workflow.run` and :mod:`.study`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ...data.colour import ReinhardReference
from ...data.manifest import Manifest
from ...errors import InputError


class SiteAdapter(ClassifierMixin, BaseEstimator):
    """Adapt a pretrained encoder to a new site from a few labelled images.

    ``source``: a pretraining run folder (its ``encoder.keras`` and ``colour_reference.json``) or an encoder
    file. ``mode``: ``svm`` (frozen embeddings), ``head`` (softmax on frozen embeddings) or ``finetune``
    (encoder and head; ``lr`` × ``epochs`` × ``batch_size`` chosen by ``cv``-fold CV inside the shots; with
    ``warm_head`` the head starts from a fit on the frozen embeddings).
    ``reference``: the source colour style (a :class:`~hemoembed.data.colour.ReinhardReference` or its
    JSON file) when the run keeps none. Images are file paths, a manifest, or preprocessed (N, S, S, 3)
    float arrays of the encoder's input size.
    """

    def __init__(self, source: str | os.PathLike = "", mode: str = "svm", colour_transform: bool = True,
                 reference: ReinhardReference | str | os.PathLike | None = None,
                 lr: Sequence[float] = (1e-4, 1e-3), epochs: Sequence[int] = (5, 10),
                 batch_size: Sequence[int] = (16,), cv: int = 3, label_smoothing: float = 0.1,
                 head_epochs: int = 200, warm_head: bool = True, embed_batch_size: int = 64,
                 random_state: int = 0) -> None:
        self.source = source
        self.mode = mode
        self.colour_transform = colour_transform
        self.reference = reference
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.cv = cv
        self.label_smoothing = label_smoothing
        self.head_epochs = head_epochs
        self.warm_head = warm_head
        self.embed_batch_size = embed_batch_size
        self.random_state = random_state

    @classmethod
    def from_run(cls, run: Any, **params: Any) -> SiteAdapter:
        """An adapter for a pretraining run: a :func:`hemoembed.pretrain` result, a run folder or an encoder."""
        source = getattr(run, "out", run)
        return cls(source=str(source), **params)

    # ------------------------------------------------------------------------------------------- fitting
    def fit(self, images: Sequence[str | os.PathLike] | Manifest | np.ndarray,
            labels: Sequence[str] | None = None) -> SiteAdapter:
        """Adapt on ``images`` with ``labels`` (default: a manifest's ``label`` column)."""
        from ...model.encoder import load_encoder
        from ..common.labels import check_trainable
        from .adapter import SiteExperiment
        from .site import resolve_source

        if labels is None:
            if not isinstance(images, Manifest):
                raise InputError("SiteAdapter.fit needs labels (or a manifest with a 'label' column)")
            labels = images.column("label")
        y = np.asarray([str(v) for v in labels])
        check_trainable(y, "labels")
        encoder_path, run_dir = resolve_source(self.source)
        source, record = load_encoder(encoder_path)
        self.reference_ = self._reference(run_dir) if self.colour_transform else None
        self.record_ = record.without_colour()
        pixels = self._pixels(images, self.record_)
        if len(pixels) != len(y):
            raise InputError(f"{len(pixels)} images but {len(y)} labels")
        experiment = SiteExperiment(source, record, self.reference_, pixels, y, batch_size=self.embed_batch_size)
        everything = np.arange(len(y))
        grid = {"lr": list(self.lr), "epochs": list(self.epochs), "batch_size": list(self.batch_size)}
        outcome = experiment.run(self.mode, everything, everything[:0], colour=self.colour_transform, grid=grid,
                                 folds=self.cv, smoothing=self.label_smoothing, head_epochs=self.head_epochs,
                                 warm_head=self.warm_head, seed=self.random_state)
        self.classes_ = np.asarray(outcome.classes)
        self.encoder_, self.svm_, self.classifier_, self.cv_ = (outcome.encoder, outcome.svm, outcome.classifier,
                                                                 outcome.cv)
        return self

    def _reference(self, run_dir) -> ReinhardReference:
        from .site import source_reference

        if isinstance(self.reference, ReinhardReference):
            return self.reference
        if self.reference is not None:
            return ReinhardReference.from_json(self.reference)
        return source_reference(run_dir, None)[0]

    def _pixels(self, images, record) -> np.ndarray:
        from ...data.preprocess import load_inputs

        if isinstance(images, np.ndarray):
            size = (record.image_size, record.image_size, 3)
            if images.ndim != 4 or images.shape[1:] != size:
                raise InputError(f"image arrays must be preprocessed (N, {size[0]}, {size[1]}, 3) encoder inputs, "
                                 f"got {images.shape}")
            return images.astype(np.float32)
        paths = images.absolute() if isinstance(images, Manifest) else [str(p) for p in images]
        return load_inputs(paths, record, self.embed_batch_size)

    # ------------------------------------------------------------------------------------------- using
    def _fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise InputError("SiteAdapter is not fitted yet")

    def transform(self, images) -> np.ndarray:
        """Embeddings of ``images`` by the adapted encoder (colour transform inside)."""
        from .adapter import embed_arrays

        self._fitted()
        return embed_arrays(self.encoder_, self._pixels(images, self.record_), self.embed_batch_size)

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities (N, K), columns in the order of ``classes_``."""
        self._fitted()
        if self.svm_ is not None:
            return self.svm_.predict_proba(self.transform(images))
        pixels = self._pixels(images, self.record_)
        return np.asarray(self.classifier_.predict(pixels, batch_size=self.embed_batch_size, verbose=0))

    def predict(self, images) -> np.ndarray:
        """Class names: the argmax of :meth:`predict_proba`."""
        proba = self.predict_proba(images)
        return self.classes_[proba.argmax(axis=1)]
