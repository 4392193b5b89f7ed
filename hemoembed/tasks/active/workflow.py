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
    rows, y, keys = store.labelled_rows(source["labels"], column, key)
    check_trainable(y, column)
    if source.get("test"):
        test_rows, y_test, test_keys = store.labelled_rows(source["test"], column, key)
        refuse_overlap(keys, test_keys, source["test"], key)
        pool_rows, y_pool = rows, y
    else:
        pool, test = stratified_test_split(y, config.test_fraction, seed=config.seed)
        pool_rows, y_pool, test_rows, y_test = rows[pool], y[pool], rows[test], y[test]
    # each row read once, straight into the pool or the test matrix, which simulate then standardises in place
    X_pool, X_test = store.rows_embeddings(pool_rows), store.rows_embeddings(test_rows)
    save_config(config, out / "active_config.json")
    total = config.repeats * len(config.strategies) * n_iterations(len(y_pool), config)
    with stage(progress, total, "querying") as advance:
        results = simulate(X_pool, y_pool, X_test, y_test, config, progress=advance, copy=False)
    atomic_write_text(out / "results.csv", tidy_csv_text(results))
    summary = analyse(results, out)
    return {**summary, "n_pool": len(y_pool), "n_test": len(y_test)}
