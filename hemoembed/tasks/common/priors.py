"""Class-prior shift: re-weight a classifier's probabilities to the class mix of the images it is applied to.

A few-shot adapter learns from class-balanced shots, but a site's cells are not balanced (BCCD: 72 % of the
test cells are neutrophils), so its probabilities carry the shots' uniform prior. Saerens, Latinne and
Decaestecker (2002, "Adjusting the outputs of a classifier to new a priori probabilities: a simple
procedure", Neural Computation 14) estimate the new priors by EM from the unlabelled images' probabilities
alone: p'(y|x) ∝ π'(y)/π(y) · p(y|x), π'(y) = mean over images of p'(y|x), repeated to a fixed point. No
label of the images enters, so it is fair on a test set.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import InputError


def em_priors(proba: np.ndarray, train_priors: Sequence[float] | None = None, *, max_iter: int = 200,
              tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """``(estimated priors, adjusted probabilities)`` of ``proba`` (N, K) under the EM prior update.

    ``train_priors``: the class mix the classifier was trained with (default uniform: balanced shots).
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise InputError("prior shift needs a non-empty (images × classes) probability matrix")
    k = p.shape[1]
    base = np.full(k, 1.0 / k) if train_priors is None else np.asarray(train_priors, dtype=np.float64)
    if base.shape != (k,) or np.any(base <= 0):
        raise InputError(f"training priors must be {k} positive numbers, one per class")
    base = base / base.sum()
    p = np.clip(p, 1e-12, None)
    priors, adjusted = base.copy(), p / p.sum(axis=1, keepdims=True)
    for _ in range(int(max_iter)):
        w = p * (priors / base)
        adjusted = w / w.sum(axis=1, keepdims=True)
        new = adjusted.mean(axis=0)
        converged = np.abs(new - priors).max() < tol
        priors = new
        if converged:
            break
    return priors, adjusted
