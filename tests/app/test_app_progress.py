"""Per-file progress of an upload batch (``GET /api/batches/B/progress``) and the worker's encoder steps."""
from __future__ import annotations

from helpers import multipart, wait_until


def test_progress_shows_the_cells_being_embedded_then_the_classified_ones(client_for, cell_files):
    client, engine = client_for()
    batch = client.post("/api/batches", json={"name": "progress"}).json()["id"]
    other = client.post("/api/batches", json={"name": "other"}).json()["id"]
    empty = client.get(f"/api/batches/{batch}/progress").json()
    assert (empty["cells"], empty["queued"], empty["done"], empty["embedding"]) == (0, 0, 0, [])
    files = [*cell_files(5), ("notes.txt", b"not an image\n")]
    with engine._model_lock:  # the worker takes the batch in hand, then waits here for the encoder
        ids = [r["id"] for r in client.post(f"/api/batches/{batch}/files", files=multipart(files)).json()["results"]]
        client.post(f"/api/batches/{other}/files", files=multipart(cell_files(2, start=30)))
        held = wait_until(lambda: (p := client.get(f"/api/batches/{batch}/progress").json())
                          and len(p["embedding"]) == 5 and p)
        assert held["embedding"] == sorted(ids[:5]) and ids[5] is None  # only this batch's cells are named
        assert (held["cells"], held["queued"], held["done"], held["error"], held["rejected"]) == (5, 5, 0, 0, 1)
        assert held["embedded"] == 0 and held["embedding_of"] >= 5
    done = wait_until(lambda: (p := client.get(f"/api/batches/{batch}/progress").json()) and p["done"] == 5 and p)
    assert (done["queued"], done["embedding"], done["rejected"], done["model_version"]) == (0, [], 1, 0)
    assert client.get("/api/batches/999/progress").status_code == 400


def test_the_worker_advances_the_progress_after_every_encoder_step(make_engine, cell_files):
    engine = make_engine(start=False, step=2)  # no thread: the test runs the worker's batch itself
    batch = engine.state.new_batch("steps")
    ids = [r["id"] for r in engine.ingest(cell_files(5), batch)]
    seen = []
    advance = engine.worker.advance

    def record(files: int) -> None:
        seen.append((files, engine.worker.progress(batch)))
        advance(files)

    engine.worker.advance = record
    engine.worker.process(ids)
    assert [files for files, _ in seen] == [2, 2, 1]  # three encoder steps for one batch of five
    assert [p["embedded"] for _, p in seen] == [0, 2, 4] and all(p["cells"] == ids for _, p in seen)
    assert all(c["status"] == "done" for c in engine.state.cells(ids))
    assert engine.worker.progress(batch) == {"cells": [], "embedded": 0, "of": 0}  # nothing in hand now
    assert len(engine.query_store.part_files()) == 1  # still one store part and one transaction per batch


def test_a_poll_between_recording_a_batch_and_letting_it_go_shows_it_finished(make_engine, cell_files):
    engine = make_engine(start=False)  # no thread: the test runs the worker's batch itself
    batch = engine.state.new_batch("race")
    ids = [r["id"] for r in engine.ingest(cell_files(3), batch)]
    seen = []
    finish = engine.worker.finish

    def record(ready, failed) -> None:  # the moment after the predictions are recorded, cells still in hand
        finish(ready, failed)
        seen.append(engine.progress(batch))

    engine.worker.finish = record
    engine.worker.process(ids)
    assert engine.worker.progress(batch)["cells"] == []
    assert [(p["done"], p["queued"], p["embedding"]) for p in seen] == [(3, 0, [])]
