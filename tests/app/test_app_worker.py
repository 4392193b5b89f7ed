"""The inference worker's embedding graph: the vectors ``hemoembed embed`` stores, and a file that stopped
decoding left out without losing the rest of its step."""
from __future__ import annotations

import numpy as np


def test_the_worker_embeds_files_as_embed_stored_them(make_engine, loaded):
    reference = loaded[0]
    engine = make_engine(start=False, step=4)
    rows = list(range(0, len(reference.store), 9))  # several steps, the last one short
    vectors, ok = engine.worker._embed([str(reference.image_file(r)) for r in rows], advance=False)
    assert ok.tolist() == list(range(len(rows))) and len(rows) % 4
    np.testing.assert_allclose(vectors, reference.store.embeddings()[rows], atol=1e-5)


def test_a_file_that_no_longer_decodes_fails_alone(make_engine, cell_files):
    engine = make_engine(start=False, step=3)
    batch = engine.state.new_batch("b")
    ids = [r["id"] for r in engine.ingest(cell_files(5), batch)]
    broken = engine.state.cells([ids[1]])[0]
    (engine.data / broken["image"]).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # damaged on disk after upload
    engine.worker.process(ids)
    cells = {c["id"]: c for c in engine.state.cells(ids)}
    assert cells[ids[1]]["status"] == "error" and "decode" in cells[ids[1]]["error"]
    assert all(cells[i]["status"] == "done" for i in ids if i != ids[1])
    assert len(engine.query_store) == 4 and broken["image"] not in engine.query_store.paths
