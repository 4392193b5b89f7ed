"""openTSNE affinities of a :class:`~hemoembed.explain.tsne.TsneMap` (here so that reading a map or checking
its options never imports openTSNE and scikit-learn, seconds on a small machine)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from openTSNE.affinity import PerplexityBasedNN
from openTSNE.nearest_neighbors import Sklearn
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

if TYPE_CHECKING:
    from .tsne import TsneConfig


def exact_affinities(features: np.ndarray, config: TsneConfig) -> PerplexityBasedNN:
    """Perplexity affinities on exact neighbours (the same exact index a reloaded map queries)."""
    return PerplexityBasedNN(features, perplexity=config.perplexity, method="exact", metric=config.metric,
                             n_jobs=config.n_jobs, random_state=config.seed)


class QueryAffinities(PerplexityBasedNN):
    """Affinities that can only place new points (``to_new``) on a reloaded map: ``transform`` never reads
    the reference P, so it is left empty and no all-pairs neighbour search runs on loading."""

    def __init__(self, features: np.ndarray, config: TsneConfig) -> None:  # deliberately no super().__init__
        index = Sklearn(features, k=min(len(features) - 1, int(3 * config.perplexity)), metric=config.metric,
                        n_jobs=config.n_jobs)
        index.index = NearestNeighbors(metric=config.metric, n_jobs=config.n_jobs).fit(features)
        self.knn_index = index
        self.P = sparse.csr_matrix((len(features), len(features)))
        self.perplexity = self.effective_perplexity_ = config.perplexity
        self.symmetrize, self.n_jobs, self.verbose, self.knn_kwargs = True, config.n_jobs, False, None
