"""``hemoembed active-learn --simulate``: join the labels, split off the test set, run every strategy, write
the tidy results and the power-law analysis."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...progress import ProgressFactory, stage
from .simulation import ActiveConfig, n_iterations, simulate, tidy_csv_text


def run(config: ActiveConfig, out: str | os.PathLike, *, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """The simulation study described by ``config`` (``config.source``: store, labels, column, test and,
    when not ``path``, the join key) into ``out``: ``active_config.json``, ``results.csv``,
    ``curve_fits.csv``, ``analysis.json``, ``fig_curves.png``, ``fig_rates.png``. Returns the analysis summary
    plus the pool and test sizes."""
    from ...config import atomic_write_text, save_config
    from ...store.store import EmbeddingStore
    from ..common.labels import check_trainable
    from ..common.splits import refuse_overlap, stratified_test_split
    from .power_law import analyse

    config.validate()
    out = Path(out)
    source = config.source
    store = EmbeddingStore.open(source["store"])
    source["store_fingerprint"] = store.fingerprint
    column, key = source["column"], source.get("key", "path")
    X, y, keys = store.labelled(source["labels"], column, key, return_keys=True)
    check_trainable(y, column)
    if source.get("test"):
        X_test, y_test, test_keys = store.labelled(source["test"], column, key, return_keys=True)
        refuse_overlap(keys, test_keys, source["test"], key)
        X_pool, y_pool = X, y
    else:
        pool, test = stratified_test_split(y, config.test_fraction, seed=config.seed)
        X_pool, y_pool, X_test, y_test = X[pool], y[pool], X[test], y[test]
    save_config(config, out / "active_config.json")
    total = config.repeats * len(config.strategies) * n_iterations(len(y_pool), config)
    with stage(progress, total, "querying") as advance:
        rows = simulate(X_pool, y_pool, X_test, y_test, config, progress=advance)
    atomic_write_text(out / "results.csv", tidy_csv_text(rows))
    summary = analyse(rows, out)
    return {**summary, "n_pool": len(y_pool), "n_test": len(y_test)}
