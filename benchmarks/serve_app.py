"""Benchmark: the review app (``hemoembed serve``) on a 17,092-cell PBC reference store. Prints JSON.

Usage (from the repository root; CPU-heavy, run under /work/bin/heavy on the shared machine):
    .venv/bin/python benchmarks/serve_app.py setup --store STORE --out RUN
    .venv/bin/python benchmarks/serve_app.py throughput --store STORE --out RUN --n 500
    .venv/bin/python benchmarks/serve_app.py latency --store STORE --out RUN --n-latency 60
    .venv/bin/python benchmarks/serve_app.py retrain --store STORE --out RUN --corrections 90
    .venv/bin/python benchmarks/serve_app.py all --store STORE --out RUN   # the four in turn

``setup`` holds ``--heldout`` (1,000) cells out of the reference labels (stratified by class, seeded),
fits the version-0 SVM on the others with ``hemoembed fit-svm`` (default solver) and draws the map with
``hemoembed tsne``; nothing is written into STORE. Labels are the PBC class folders of the store paths.

The other commands start ``hemoembed serve`` as its own process on a free port with a fresh ``--data``
folder and drive it over HTTP, as a browser or a script would; the server's CPU seconds are read from
``/proc/PID/stat`` (user + system, all threads), so load from other work on a shared machine inflates
wall time but not the CPU figures.

* ``throughput``: warm against warm, ``--rounds`` times (median reported). The server: a fresh
  ``hemoembed serve`` (which loads the encoder and traces the input pipeline and encoder call before it
  answers ``/health``; not timed), then ``--n`` held-out images uploaded through ``POST /api/batches/B/files``
  (``--chunk`` per request: 16, as the browser UI sends them) until every prediction is stored (polling
  ``/api/batches/B/progress`` as the UI does). The baseline: the library in this process, equally warm
  (encoder and SVM loaded, and one untimed ``run_embed`` + ``predict_proba`` of a few other images into a
  throwaway store, which traces the pipeline and the encoder call for any batch length), then, timed,
  ``embed`` (``run_embed`` into a fresh store) and ``predict`` (``predict_proba`` on the stored rows) of the
  same files. Ratio = baseline / server (≥ 1: the server is as fast), wall and CPU; the goal figure is the
  CPU ratio (see :func:`throughput`).
* ``latency``: ``POST /api/predict`` with one new image, then ``GET /api/cells/ID`` (the detail view: the
  k nearest reference cells and the on-demand t-SNE placement, the cell not placed yet) and the same detail
  opened again (placement stored); p50 and p95 over ``--n-latency`` cells (after 3 warm-up cells).
* ``retrain``: every held-out cell uploaded; the ``--corrections`` cells first in the app's "needs review"
  order get their true label, ``POST /api/retrain``, wait for the new version; the version's seconds and the
  server's CPU seconds, and macro-F1 on the held-out cells not corrected for version 0 and the new version.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, in this process as in the server's


def hemoembed(*args: str) -> None:
    """Run a hemoembed command as its own process (this checkout's package first on the path; its output to
    stderr, so stdout holds only the JSON)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "hemoembed", *map(str, args)], check=True, env=env, stdout=sys.stderr)


def label_of(path: str) -> str:
    return Path(path).parent.name


def setup(store_dir: Path, out: Path, heldout: int, seed: int) -> dict:
    """Held-out split, version-0 SVM and map (each skipped when already there)."""
    from hemoembed.store.store import EmbeddingStore

    out.mkdir(parents=True, exist_ok=True)
    store = EmbeddingStore.open(store_dir)
    if not (out / "heldout_labels.csv").is_file():
        by_class = defaultdict(list)
        for path in sorted(store.paths):
            by_class[label_of(path)].append(path)
        rng = random.Random(seed)
        held: set[str] = set()
        for paths in by_class.values():  # stratified: each class in proportion
            held.update(rng.sample(paths, round(heldout * len(paths) / len(store))))
        for name, rows in (("reference_labels.csv", [p for p in sorted(store.paths) if p not in held]),
                           ("heldout_labels.csv", sorted(held))):
            with open(out / name, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["path", "label"])
                writer.writerows([p, label_of(p)] for p in rows)
    if not (out / "svm" / "label" / "model.json").is_file():
        hemoembed("fit-svm", store_dir, "--labels", out / "reference_labels.csv", "--columns", "label", "--cv", "0",
                  "--bootstrap", "200", "--out", out / "svm", "--overwrite")
    if not (out / "map" / "map.json").is_file():
        hemoembed("tsne", store_dir, "--labels", out / "reference_labels.csv", "--out", out / "map", "--overwrite")
    return {"store": str(store_dir), "cells": len(store), "heldout": len(read_labels(out / "heldout_labels.csv")),
            "svm": str(out / "svm"), "map": str(out / "map")}


def read_labels(path: Path) -> dict[str, str]:
    with open(path, newline="") as handle:
        return {row["path"]: row["label"] for row in csv.DictReader(handle)}


def heldout_files(store_dir: Path, out: Path) -> tuple[Path, list[str], list[str]]:
    """(image root, held-out store paths, their labels) in a fixed shuffled order (classes mixed)."""
    from hemoembed.explain.gallery import store_image_root

    labels = read_labels(out / "heldout_labels.csv")
    paths = sorted(labels)
    random.Random(1).shuffle(paths)
    return store_image_root(store_dir), paths, [labels[p] for p in paths]


class Server:
    """``hemoembed serve`` as its own process on a free port with a fresh data folder; CPU seconds from /proc."""

    def __init__(self, store_dir: Path, out: Path, name: str, extra: tuple[str, ...] = ()) -> None:
        import httpx

        data = out / f"data_{name}"
        shutil.rmtree(data, ignore_errors=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.log = open(out / f"server_{name}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hemoembed", "serve", "--store", str(store_dir), "--model", str(out / "svm"),
             "--map", str(out / "map"), "--data", str(data), "--port", str(port), *extra],
            env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=self.log,
            stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=3600.0)
        started = time.perf_counter()
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited with {self.process.returncode}; see {self.log.name}")
            try:
                if self.http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        self.start_seconds = time.perf_counter() - started

    def cpu(self) -> float:
        """User + system CPU seconds of the server process so far (all threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def upload(self, batch: int, files: list[Path], chunk: int) -> list[int]:
        """Upload in requests of ``chunk`` files; the cell ids in order."""
        ids = []
        for at in range(0, len(files), chunk):
            parts = [("files", (f.name, f.read_bytes(), "image/jpeg")) for f in files[at:at + chunk]]
            response = self.http.post(f"/api/batches/{batch}/files", files=parts)
            response.raise_for_status()
            results = response.json()["results"]
            bad = [r for r in results if r["error"]]
            if bad:
                raise SystemExit(f"upload refused {len(bad)} file(s), e.g. {bad[0]}")
            ids += [r["id"] for r in results]
        return ids

    def wait_done(self, batch: int) -> None:
        """Poll the batch's progress (as the browser UI does) until no cell is queued: every prediction stored."""
        while self.http.get(f"/api/batches/{batch}/progress").json()["queued"]:
            time.sleep(0.05)

    def cells(self, batch: int, **params) -> list[dict]:
        return self.http.get("/api/cells", params={"batch": batch, **params}).json()

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def throughput(store_dir: Path, out: Path, n: int, chunk: int, rounds: int) -> dict:
    """Upload ``n`` held-out images through HTTP until predictions are stored vs embed + predict in-process,
    both warm, ``rounds`` times (a fresh server and a fresh baseline store each round, the same files).

    The goal figure is the median CPU ratio: CPU seconds count only the work each side did (the server
    process, all threads; this process for the baseline). The wall ratio also carries what the server is not
    charged with in use: the client sending the files runs on the same 2 cores here (a browser runs on the
    reviewer's machine; its CPU is reported as ``client_cpu_seconds``), and the two sides run one after the
    other under whatever load other work puts on the shared cores."""
    root, paths, _ = heldout_files(store_dir, out)
    files = [root / p for p in paths[:n]]
    baseline = Baseline(store_dir, out, root)
    baseline.warm_up([root / p for p in paths[n:n + 8]])
    runs = []
    for _ in range(rounds):
        server = Server(store_dir, out, "throughput")
        try:
            batch = server.http.post("/api/batches", json={"name": "throughput"}).json()["id"]
            cpu0, t0, client0 = server.cpu(), time.perf_counter(), time.process_time()
            ids = server.upload(batch, files, chunk)
            server.wait_done(batch)
            wall, cpu = time.perf_counter() - t0, server.cpu() - cpu0
            client = time.process_time() - client0  # this process sending: on the same cores as the server
            failed = [c for c in server.cells(batch) if c["status"] != "done"]  # checked after the clock stops
        finally:
            server.close()
        if failed or len(ids) != n:
            raise SystemExit(f"{len(failed)} of {len(ids)} uploads not classified, e.g. {failed[:1]}")
        base = baseline.run(files)
        runs.append({"server_start_seconds": round(server.start_seconds, 1),
                     "http": {"seconds": round(wall, 2), "images_per_s": round(n / wall, 2),
                              "cpu_seconds": round(cpu, 2), "client_cpu_seconds": round(client, 2)},
                     "embed_predict": base,
                     "ratio_wall": round(base["seconds"] / wall, 3), "ratio_cpu": round(base["cpu_seconds"] / cpu, 3)})
    median = sorted(runs, key=lambda r: r["ratio_cpu"])[len(runs) // 2]
    return {"images": n, "files_per_request": chunk, "rounds": rounds, "goal_figure": "ratio_cpu (median round)",
            "median_round": median, "ratio_cpu": median["ratio_cpu"],
            "ratio_wall_median": sorted(r["ratio_wall"] for r in runs)[len(runs) // 2], "runs": runs}


class Baseline:
    """``hemoembed embed`` + ``predict`` in this process: ``run_embed`` into a fresh store, then the SVM's
    ``predict_proba`` on its rows, with the encoder and SVM loaded once (as the server loads them)."""

    def __init__(self, store_dir: Path, out: Path, root: Path) -> None:
        from hemoembed.app.reference import _recorded_encoder
        from hemoembed.model.encoder import fingerprint, load_encoder
        from hemoembed.tasks.svm import column_folder, load_svm

        self.model, self.record = load_encoder(_recorded_encoder(store_dir))
        self.fingerprint = fingerprint(self.model)
        self.svm, _ = load_svm(column_folder(out / "svm", None))
        self.out, self.root = out, root

    def warm_up(self, files: list[Path]) -> None:
        """One untimed embed + predict of other files (two batch lengths, so the encoder call is traced for
        any length), as the server traces at start before it answers ``/health``."""
        self._embed_predict(files, "baseline_warmup", batch_size=max(1, len(files) - 1))

    def run(self, files: list[Path]) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        rows = self._embed_predict(files, "baseline_store", batch_size=64)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"seconds": round(wall, 2), "images_per_s": round(rows / wall, 2), "cpu_seconds": round(cpu, 2)}

    def _embed_predict(self, files: list[Path], name: str, batch_size: int) -> int:
        from hemoembed.data.manifest import Manifest
        from hemoembed.store.embed import run_embed
        from hemoembed.store.store import EmbeddingStore

        target = self.out / name
        shutil.rmtree(target, ignore_errors=True)
        manifest = Manifest(self.root, [str(f.relative_to(self.root)) for f in files], source="benchmark")
        store = EmbeddingStore.create(target, self.fingerprint, self.record, int(self.model.output_shape[-1]))
        run_embed(self.model, self.record, store, manifest, batch_size=batch_size)
        return len(self.svm.predict_proba(EmbeddingStore.open(target).embeddings()))


def percentiles(values: list[float]) -> dict:
    import numpy as np

    ms = 1000 * np.asarray(values)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "n": len(values)}


def latency(store_dir: Path, out: Path, n: int) -> dict:
    """Single-image ``/api/predict``, then the detail view (first open: placement on the map; then again)."""
    root, paths, _ = heldout_files(store_dir, out)
    server = Server(store_dir, out, "latency")
    times: dict[str, list[float]] = {"predict": [], "detail_first": [], "detail_again": []}
    neighbours = 0
    try:
        for i, path in enumerate(paths[-(n + 3):]):  # not the throughput files; 3 warm-up requests
            t0 = time.perf_counter()
            result = server.http.post("/api/predict", files=[("files", (Path(path).name, (root / path).read_bytes(),
                                                                        "image/jpeg"))]).json()["results"][0]
            t1 = time.perf_counter()
            detail = server.http.get(f"/api/cells/{result['id']}").json()
            t2 = time.perf_counter()
            server.http.get(f"/api/cells/{result['id']}").raise_for_status()
            t3 = time.perf_counter()
            if result["error"] or detail.get("map_x") is None:
                raise SystemExit(f"{path}: {result['error'] or 'not placed on the map'}")
            neighbours = len(detail["neighbours"])
            if i >= 3:
                for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                    times[key].append(seconds)
    finally:
        server.close()
    from hemoembed.store.store import EmbeddingStore

    return {"reference_cells": len(EmbeddingStore.open(store_dir)), "k": neighbours,
            **{key: percentiles(values) for key, values in times.items()}}


def retrain(store_dir: Path, out: Path, corrections: int) -> dict:
    """Upload every held-out cell, correct the first ``corrections`` in "needs review" order, retrain."""
    from hemoembed.tasks.common.metrics import macro_f1

    root, paths, truth = heldout_files(store_dir, out)
    server = Server(store_dir, out, "retrain")
    try:
        batch = server.http.post("/api/batches", json={"name": "retrain"}).json()["id"]
        ids = server.upload(batch, [root / p for p in paths], 100)
        true = dict(zip(ids, truth))
        server.wait_done(batch)
        order = server.cells(batch, order="review")
        chosen = [c["id"] for c in order[:corrections]]
        for cell in chosen:
            server.http.post(f"/api/cells/{cell}/correction", json={"label": true[cell], "reviewer": "benchmark"}
                             ).raise_for_status()
        rest = [i for i in ids if i not in set(chosen)]
        classes = server.http.get("/api/classes").json()

        def f1() -> float:
            cells = {c["id"]: c for c in server.cells(batch)}
            return round(macro_f1([true[i] for i in rest], [cells[i]["label"] for i in rest], classes), 4)

        before = f1()
        cpu0 = server.cpu()
        version = server.http.post("/api/retrain").json()["version"]
        while True:
            model = server.http.get("/api/model").json()
            row = next(v for v in model["versions"] if v["version"] == version)
            if row["status"] != "training":
                break
            time.sleep(0.2)
        cpu = server.cpu() - cpu0
        if row["status"] != "ready":
            raise SystemExit(f"retrain failed: {row.get('error')}")
        after = f1()
    finally:
        server.close()
    wrong = sum(1 for c in order[:corrections] if c["label"] != true[c["id"]])
    return {"uploaded": len(ids), "corrections": len(chosen), "corrected_cells_predicted_wrong": wrong,
            "retrain_seconds": round(row["seconds"], 2), "retrain_server_cpu_seconds": round(cpu, 2),
            "labels_taught": row["n_labels"], "cv_macro_f1": row["cv_macro_f1"],
            "heldout_macro_f1_before": before, "heldout_macro_f1_after": after, "heldout_cells_scored": len(rest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("setup", "throughput", "latency", "retrain", "all"))
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--heldout", type=int, default=1000)
    parser.add_argument("--n", type=int, default=500, help="throughput: images uploaded")
    parser.add_argument("--chunk", type=int, default=16, help="throughput: files per upload request")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: warm server vs warm baseline rounds")
    parser.add_argument("--n-latency", type=int, default=60)
    parser.add_argument("--corrections", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = {"benchmark": f"serve_app {args.what}", "date": time.strftime("%Y-%m-%d %H:%M %Z"),
              "load_average_before": os.getloadavg(), "cpus": os.cpu_count(), "machine": platform.platform()}
    steps = ("setup", "throughput", "latency", "retrain") if args.what == "all" else (args.what,)
    for step in steps:
        if step == "setup":
            result["setup"] = setup(args.store, args.out, args.heldout, args.seed)
        elif step == "throughput":
            result["throughput"] = throughput(args.store, args.out, args.n, args.chunk, args.rounds)
        elif step == "latency":
            result["latency"] = latency(args.store, args.out, args.n_latency)
        else:
            result["retrain"] = retrain(args.store, args.out, args.corrections)
        print(json.dumps({step: result[step]}), file=sys.stderr, flush=True)
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
