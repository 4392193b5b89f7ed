"""The review app through HTTP: the /predict + /health contract, bad input, the token rule, the review loop."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from helpers import multipart, wait_until
from PIL import Image

from hemoembed.app.intake import Limits


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _files(folder) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_predict_contract_with_every_kind_of_bad_file(client_for, cell_files, reference_files):
    reference = _files(reference_files.store)
    client, engine = client_for(limits=Limits(max_file_bytes=200_000, max_pixels=4_000_000, max_files=20))
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_version"] == 0
    good = cell_files(3)
    rgb = np.asarray(Image.open(io.BytesIO(good[0][1])).convert("RGB"))
    tiff = ("cell.tif", png_bytes(Image.fromarray(rgb[:, ::-1]), "TIFF"))
    truncated = ("truncated.png", good[1][1][: len(good[1][1]) // 2])
    bomb = ("bomb.png", png_bytes(Image.new("1", (3000, 3000))))  # 9 Mpx in a few kB: refused before decoding
    files = [good[0], ("notes.txt", b"not an image at all\n"), truncated, good[1], ("empty.png", b""), bomb,
             ("../../etc/passwd", good[2][1]), good[0], ("tiny.png", png_bytes(Image.new("RGB", (8, 8)))),
             ("huge.bmp", b"BM" + bytes(250_000)), tiff]
    response = client.post("/api/predict", files=multipart(files))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [
        good[0][0], "notes.txt", "truncated.png", good[1][0], "empty.png", "bomb.png", "passwd", good[0][0],
        "tiny.png", "huge.bmp", "cell.tif"]
    ok = [results[i] for i in (0, 3, 6, 10)]
    classes = engine.state.classes()
    for r in ok:
        assert r["error"] is None and r["label"] in classes and r["model_version"] == 0
        assert set(r["probabilities"]) == set(classes) and abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    errors = {r["filename"]: r["error"] for r in results if r["error"]}
    assert "not an image" in errors["notes.txt"] and "truncated" in errors["truncated.png"]
    assert errors["empty.png"] == "empty file" and "decompression bomb" in errors["bomb.png"]
    assert ("tiny" in errors["tiny.png"] or "too small" in errors["tiny.png"]) and "larger than" in errors["huge.bmp"]
    assert f"identical to cell {results[0]['id']}" in results[7]["error"] and results[7]["id"] == results[0]["id"]
    for r in results:
        assert r["error"] is None or ("\n" not in r["error"] and r["label"] is None)
    again = client.post("/api/predict", files=multipart([good[1]])).json()["results"][0]
    assert again["label"] is None and f"identical to cell {results[3]['id']}" in again["error"]
    stored = sorted(p.name for p in (engine.data / "images").rglob("*.*"))
    assert len(stored) == 4 and all(len(name.split(".")[0]) == 64 for name in stored)  # content-addressed only
    assert engine.state.rejects()[0]["reason"].startswith("not an image")
    assert len(engine.query_store) == 4 and _files(reference_files.store) == reference  # never the reference store

    assert client.post("/api/predict", files=multipart(cell_files(21, start=3))).status_code == 400
    assert "at most 20 files" in client.post("/api/predict", files=multipart(cell_files(21, 3))).json()["detail"]
    assert client.post("/api/predict", data={"x": "1"}).json()["detail"].startswith("no files")


def test_token_rule_and_request_guards(client_for, cell_files):
    token = "s3cret-token-for-tests"
    client, _ = client_for(token=token)
    assert client.get("/health").status_code == 200  # monitoring needs no token
    files = multipart(cell_files(1))
    assert client.post("/api/predict", files=files).status_code == 401
    assert client.get("/api/model").status_code == 401
    assert client.get("/api/cells", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/cells", headers={"Authorization": token}).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/predict", files=files, headers=auth).json()["results"][0]["error"] is None
    assert client.get("/api/model", headers=auth).status_code == 200
    # a page on another site cannot drive the API, nor can a rebound DNS name reach a loopback server
    cross = client.post("/api/batches", json={"name": "x"}, headers={**auth, "Origin": "http://evil.example"})
    assert cross.status_code == 403
    assert client.get("/health", headers={"Host": "evil.example"}).status_code == 403
    for host in ("evil.example:8000", "127.0.0.1.evil.example", "[::1", "", "localhost@evil.example"):
        assert client.get("/health", headers={"Host": host}).status_code == 403, host
    for host in ("[::1]", "[::1]:8000", "LOCALHOST:8000", "127.0.0.1"):  # IPv6 on port 80 sends no port
        assert client.get("/health", headers={"Host": host}).status_code == 200, host
    # no client path reaches the filesystem: rows and ids are numbers, checked against the store
    assert client.get("/api/reference/99999/image", headers=auth).status_code == 400
    assert client.get("/api/reference/..%2F..%2Fetc%2Fpasswd/image", headers=auth).status_code in (404, 422)
    assert client.get("/api/cells/424242/image", headers=auth).status_code == 404
    docs = client.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_request_validation_errors_are_one_sentence_naming_the_parameter(client_for):
    """FastAPI's 422 list of dicts becomes one line that names the parameter and says what was wrong."""
    client, _ = client_for()
    cases = [(client.get("/api/cells/abc"), ("path parameter cell", "valid integer")),
             (client.get(f"/api/cells/{2**63}/image"), ("path parameter cell", "less than or equal")),
             (client.get("/api/cells?order=sideways"), ("query parameter order", "'id' or 'review'")),
             (client.post("/api/cells/1/correction", json={"reviewer": "x"}), ("body field label", "required")),
             (client.post("/api/classes", json={"name": "n" * 101}), ("body field name", "at most 100")),
             (client.post("/api/cells/1/correction", json=["label"]), ("request body", "valid dictionary")),
             (client.post("/api/batches", content=b'{"name": ', headers={"Content-Type": "application/json"}),
              ("request body is not valid JSON", "character 9"))]
    for response, words in cases:
        detail = response.json()["detail"]
        assert response.status_code == 422 and isinstance(detail, str) and "\n" not in detail, detail
        assert all(word in detail for word in words) and "{" not in detail and "[" not in detail, detail
    schema = client.get("/openapi.json").json()  # and the docs say so
    assert schema["components"]["schemas"]["ErrorDetail"]["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in str(schema)


def test_an_unknown_cell_is_a_404_and_an_internal_key_error_a_500(client_for):
    """Only the app's own lookup of a cell answers 404; a KeyError from a bug is a server error, not "no cell"."""
    from fastapi.testclient import TestClient

    client, engine = client_for()
    missing = client.get("/api/cells/424242")
    assert missing.status_code == 404 and missing.json()["detail"] == "no cell 424242"

    def broken() -> dict:
        return {}["version"]

    engine.model_status = broken  # an internal bug, not a lookup the client asked for
    server = TestClient(client.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    assert server.get("/api/model").status_code == 500


def test_review_loop_upload_detail_correct_new_class_retrain_export(client_for, cell_files, reference_files):
    client, engine = client_for()
    batch = client.post("/api/batches", json={"name": "smear 1"}).json()["id"]
    files = cell_files(9)
    for name, data in cell_files(3, start=40):  # smudge cells: nothing like them in the reference
        smudge = Image.fromarray(255 - np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1])
        files.append((f"smudge_{name}", png_bytes(smudge)))
    uploaded = client.post(f"/api/batches/{batch}/files", files=multipart(files)).json()["results"]
    assert all(r["error"] is None for r in uploaded)
    cells = wait_until(lambda: (c := client.get("/api/cells", params={"batch": batch}).json())
                       and all(x["status"] == "done" for x in c) and c)
    assert len(cells) == 12 and all(c["version"] == 0 for c in cells)
    first = cells[0]["id"]
    detail = client.get(f"/api/cells/{first}").json()
    assert len(detail["neighbours"]) == 10 and detail["map_x"] is not None
    distances = [n["distance"] for n in detail["neighbours"]]
    assert distances == sorted(distances) and distances[0] < 1e-4  # the same image is in the reference
    assert [p for _, p in detail["ranked"]] == sorted((p for _, p in detail["ranked"]), reverse=True)
    neighbour = client.get(f"/api/reference/{detail['neighbours'][0]['row']}/image")
    assert neighbour.status_code == 200 and neighbour.headers["content-type"] == "image/png"
    gradcam = client.get(f"/api/cells/{first}/gradcam")
    assert gradcam.status_code == 200 and Image.open(io.BytesIO(gradcam.content)).size == (32, 32)
    points = client.get("/api/map").json()
    assert points["available"] and len(points["x"]) == 80

    bad = client.post(f"/api/cells/{first}/correction", json={"label": "platelet"})
    assert bad.status_code == 400 and "not a class" in bad.json()["detail"]
    truth = {f"{p.parent.name}_{p.name}": p.parent.name for p in reference_files.cells.glob("*/*.png")}
    by_name = {c["filename"]: c["id"] for c in cells}
    for name, cell in list(by_name.items())[:6]:  # six reviewed (some confirmed, some changed)
        assert client.post(f"/api/cells/{cell}/correction",
                           json={"label": truth[name], "reviewer": "dr x", "seconds": 2.5}).status_code == 200
    review = client.get("/api/cells", params={"batch": batch, "order": "review"}).json()  # "needs review"
    assert [c.get("review_rank") for c in review] == [0, 1, 2, 3, 4, 5] + [None] * 6
    assert all(not c["corrected"] for c in review[:6]) and all(c["corrected"] for c in review[6:])
    uncertainty = [c["uncertainty"] for c in review[:6]]
    assert uncertainty == sorted(uncertainty, reverse=True)  # the session's query: modAL uncertainty sampling
    assert client.post("/api/classes", json={"name": "neutrophil"}).status_code == 400
    assert client.post("/api/classes", json={"name": "smudge cell"}).json()[-1] == "smudge cell"
    smudges = [cell for name, cell in by_name.items() if name.startswith("smudge_")]
    for cell in smudges:
        client.post(f"/api/cells/{cell}/correction", json={"label": "smudge cell", "reviewer": "dr x"})
    status = client.get("/api/model").json()
    assert status["pending_corrections"] == 9 and status["version"] == 0

    with engine._retrain_lock:  # the retrain waits here, so the second request surely finds it running
        assert client.post("/api/retrain").json()["version"] == 1
        assert client.post("/api/retrain").status_code == 400  # one at a time
    wait_until(lambda: client.get("/health").json()["model_version"] == 1, timeout=300)
    status = client.get("/api/model").json()
    latest = status["versions"][-1]
    assert latest["status"] == "ready" and latest["n_corrections"] == 9 and status["pending_corrections"] == 0
    assert latest["n_labels"] == 80 + 9
    refreshed = client.get("/api/cells", params={"batch": batch}).json()
    assert all(c["version"] == 1 for c in refreshed)
    assert all("smudge cell" in c["probabilities"] for c in refreshed)
    assert all(c["label"] == "smudge cell" for c in refreshed if c["id"] in smudges)  # learnt from 3 cells

    summary = client.get(f"/api/batches/{batch}/summary").json()
    assert summary["classified"] == 12 and summary["reviewed"] == 9
    assert sum(row["count"] for row in summary["classes"]) == 12
    assert abs(sum(row["percent"] for row in summary["classes"]) - 100) < 0.1
    export = client.get(f"/api/batches/{batch}/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert export.headers["content-type"].startswith("text/csv") and len(rows) == 12
    assert {"filename", "predicted_label", "corrected_label", "review_seconds", "p_smudge cell"} <= set(rows[0])
    corrected = [r for r in rows if r["corrected_label"]]
    assert len(corrected) == 9 and all(r["reviewer"] == "dr x" for r in corrected)
    assert sum(r["review_seconds"] == "2.5" for r in corrected) == 6


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the simulated crash
def test_restart_loses_nothing_and_finishes_interrupted_work(make_engine, cell_files, tmp_path):
    first = make_engine(start=False)  # no worker: the uploads stay queued, as after a crash mid-upload
    batch = first.state.new_batch("b")
    results = first.ingest(cell_files(5), batch)
    ids = [r["id"] for r in results]
    assert all(c["status"] == "queued" for c in first.state.cells(ids))
    interrupted = first.state.start_version()  # and a retrain that never finished
    first.state.correct(ids[0], "lymphocyte", "r", 1.0)
    partial = first.data / "tmp" / "f00d.png.4242"  # a file of a request the crash cut short
    partial.write_bytes(b"\x89PNG")
    second = make_engine()  # same data folder
    assert not partial.exists() and len(list((second.data / "images").rglob("*.png"))) == 5
    wait_until(lambda: all(c["status"] == "done" for c in second.state.cells(ids)))
    wait_until(lambda: second.training is None, timeout=300)
    assert second.state.versions()[-1]["status"] == "ready" and second.classifier.version == interrupted
    assert second.state.cells([ids[0]])[0]["corrected"] == "lymphocyte"
    assert len(second.query_store) == 5

    # a crash after the next retrain taught the session but before the version was recorded
    def crash(*args, **kwargs):
        raise SystemExit  # ends the retrain thread like a kill: nothing after the teach is recorded

    second.state.correct(ids[1], "basophil", "r", 1.0)
    second.state.finish_version = crash
    unrecorded = second.retrain()
    wait_until(lambda: second.training is None, timeout=300)
    assert second.state.versions()[-1]["status"] == "training" and second.classifier.version == interrupted
    X = np.stack([second.vector(c) for c in second.state.cells(ids)])
    recorded = second.classifier.predict_proba(X)
    taught = second.versions.session.predict_proba(X)[1]  # the session already holds the unrecorded model
    assert not np.allclose(recorded, taught, atol=1e-6)
    second.stop()
    third = make_engine(start=False)  # restarts on the recorded version's model, not the session's latest
    assert third.classifier.version == interrupted and len(third.state.cells()) == 5
    assert np.allclose(third.classifier.predict_proba(X), recorded, atol=1e-9)
    assert third.ingest(cell_files(1), batch)[0]["error"].startswith("duplicate")
    third.start()  # and runs the unrecorded retrain again
    wait_until(lambda: third.classifier.version == unrecorded, timeout=300)
    assert third.state.versions()[-1]["status"] == "ready" and third.state.versions()[-1]["n_corrections"] == 2
    assert np.allclose(third.classifier.predict_proba(X), taught, atol=1e-9)


def test_cli_refuses_a_public_address_without_token_and_other_stores(shell_cli, reference_files, tmp_path):
    base = ["serve", "--store", reference_files.store, "--model", reference_files.svm, "--data", tmp_path / "d"]
    result = shell_cli(*base, "--host", "0.0.0.0")  # a subprocess: a server that started would not block
    assert result.exit_code == 2 and "--token" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = shell_cli(*base, "--token", "short")
    assert result.exit_code == 2 and "16 characters" in result.stderr


def test_data_folder_belongs_to_one_store(make_engine, loaded, tmp_path):
    from hemoembed.app.engine import Engine
    from hemoembed.errors import MismatchError

    make_engine().stop()
    reference, model, record = loaded
    bound = reference.store.fingerprint
    try:
        reference.store.header.fingerprint = "0" * 64
        with pytest.raises(MismatchError, match="belongs to a store of encoder"):
            Engine(reference, model, record, tmp_path / "data")
    finally:
        reference.store.header.fingerprint = bound


def test_make_demo_ends_with_a_serve_command_on_its_own_outputs():
    """The last line demo.sh prints is a ``hemoembed serve`` whose options parse and name what the demo's
    steps wrote: the store of ``embed``, the SVM of ``fit-svm`` (one of its columns) and the map of ``tsne``."""
    import shlex
    from pathlib import Path

    from hemoembed.cli.serve_cmds import serve

    text = (Path(__file__).parents[2] / "scripts" / "demo.sh").read_text().replace("\\\n", " ")
    lines = [shlex.split(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    def step(name: str) -> list[str]:
        return next(words for words in lines if words[:2] == ["hemoembed", name])

    def option(words: list[str], name: str) -> str:
        return words[words.index(name) + 1]

    last = lines[-1]
    assert last[0] == "echo"
    words = shlex.split(last[1].split(": ", 1)[1])
    assert words[:2] == ["hemoembed", "serve"]
    params = serve.make_context("serve", words[2:]).params
    assert str(params["store_dir"]) == option(step("embed"), "--store")
    assert str(params["model_dir"]) == option(step("fit-svm"), "--out")
    assert params["column"] in option(step("fit-svm"), "--columns").split(",")
    assert str(params["map_dir"]) == option(step("tsne"), "--out")
    assert params["host"] == "127.0.0.1" and params["token"] is None


def test_the_app_finds_neighbours_through_a_current_index_and_says_why_not_a_stale_one(reference_files, loaded,
                                                                                        tmp_path):
    """A large store's detail view must not read every part per cell: with a current index the reference searches
    it (same neighbours as exact search here: one cell, every row scanned); once the store has grown past the
    index, neighbours are exact again and the reason is given."""
    import shutil

    from hemoembed.app.reference import open_reference
    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.synthetic import make_synthetic_dataset
    from hemoembed.store.embed import run_embed
    from hemoembed.store.index import NeighbourIndex
    from hemoembed.store.store import EmbeddingStore

    store_dir = tmp_path / "store"
    shutil.copytree(reference_files.store, store_dir)
    plain = open_reference(store_dir, reference_files.svm)
    assert plain.index is None and plain.neighbour_search == "exact"
    NeighbourIndex.build(EmbeddingStore.open(store_dir), nlist=1)
    indexed = open_reference(store_dir, reference_files.svm)
    assert indexed.index is not None and indexed.neighbour_search.startswith("approximate")
    queries = EmbeddingStore.open(store_dir).embeddings()[:5]
    for vector in queries:
        found = [n["row"] for n in indexed.neighbours(vector, 5)]
        exact = [n["row"] for n in plain.neighbours(vector, 5)]
        assert found[0] == exact[0] and len(set(found) & set(exact)) >= 4
    assert indexed.store.embeddings_read is None  # the index answers: the matrix is never read
    assert plain.store.embeddings_read is not None  # exact: read once and kept, not a pass over the parts per cell

    _, model, record = loaded
    make_synthetic_dataset(tmp_path / "more", n_per_class=2, sites=1, size=48, seed=5)
    run_embed(model, record, EmbeddingStore.open(store_dir), load_manifest(tmp_path / "more" / "manifest.csv"),
              batch_size=32)
    stale = open_reference(store_dir, reference_files.svm)
    assert stale.index is None
    assert stale.neighbour_search.startswith("exact, because") and "hemoembed store index" in stale.neighbour_search
