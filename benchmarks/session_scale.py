"""Benchmark: a labelling session (``active-learn --session``) on a large store. Prints JSON.

Usage (from the repository root; CPU-heavy, run under /work/bin/heavy on the shared machine):
    .venv/bin/python benchmarks/session_scale.py /work/runs/store3/scale/store_1000000 \\
        /work/runs/store3/scale/labels_1000000.csv --out /tmp/session_1m > session.json

Three steps, each its own process (``scale.py``'s :func:`measure`: wall s, CPU s, peak RSS from ``wait4``):
``start`` creates the session with the store's classes and teaches the first ``--start`` rows of LABELS;
``query`` writes a batch of ``--batch``; ``teach`` ingests that batch filled in from LABELS (the expert).
OUT/session is replaced; OUT/to_label.csv keeps the query (compare two versions' queries byte for byte).

``--cold``: the first query of a session with no labels yet (the cold start: k-means over the unlabelled rows),
two steps: ``create`` (the session with the store's classes, ``--status``; fixes the standardiser) and
``cold query`` (``--query --batch``); OUT/to_label_cold.csv keeps it. ``--one-class N``: ``create`` also teaches
the first N rows of LABELS' first class (OUT/one_class.csv), so the cold query runs with labels of one class.

``--serve``: the review app on the store (``hemoembed serve``, its own process, fresh OUT/serve_data). Setup
(measured, skipped when OUT/svm exists): ``fit-svm`` (sgd, no CV) on the first ``--serve-labels`` rows of
LABELS, the app's reference labels. Then ``serve start``: start until ``/health`` answers (wall; server CPU
and peak RSS, VmHWM, read from /proc), and ``serve retrain``: ``POST /api/retrain`` (the labelling session
behind the app teaches the reference labels and fits a new version) until the version is ready. No map
(``--map``). ``--uploads N``: N cells already uploaded when the server starts (OUT/serve_data/query_store made
beforehand with copies of the first N reference rows' embeddings, not in the app's database, so no
corrections): the first start's standardiser and the retrain read reference and uploaded rows together.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from scale import REPO, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("labels", type=Path, help="CSV path,label for every row (the expert's answers)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start", type=int, default=300, help="labels taught when the session starts")
    parser.add_argument("--batch", type=int, default=90)
    parser.add_argument("--rss-limit", type=float, default=18.0, help="kill a step past this many GiB")
    parser.add_argument("--cold", action="store_true", help="measure the cold-start query instead (see above)")
    parser.add_argument("--one-class", type=int, default=0, help="--cold: labels of one class taught first")
    parser.add_argument("--serve", action="store_true", help="measure the review app instead (see above)")
    parser.add_argument("--serve-labels", type=int, default=10_000, help="--serve: reference labels")
    parser.add_argument("--uploads", type=int, default=0, help="--serve: cells uploaded before the start")
    parser.add_argument("--encoder", type=Path, default=None, help="--serve: the store's encoder (default: "
                        "encoder.keras beside the store, as scale.py build writes it)")
    args = parser.parse_args()
    if args.serve:
        print(json.dumps(serve(args), indent=1))
        return
    with open(args.labels, newline="") as handle:
        answers = dict(tuple(row[:2]) for row in list(csv.reader(handle))[1:])
    session = args.out / "session"
    shutil.rmtree(session, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    first = list(answers.items())[: args.start]
    write_csv(args.out / "start.csv", [["path", "label"], *first])
    hem = [sys.executable, "-m", "hemoembed", "active-learn", args.store, "--session", str(session)]
    classes = ",".join(sorted(set(answers.values())))
    steps = {"start": [*hem, "--classes", classes, "--teach", str(args.out / "start.csv")],
             "query": [*hem, "--query", "--batch", str(args.batch)],
             "teach": [*hem, "--teach", str(args.out / "filled.csv")]}
    if args.cold:
        first_class = min(answers.values())
        one = [(path, label) for path, label in answers.items() if label == first_class][:args.one_class]
        write_csv(args.out / "one_class.csv", [["path", "label"], *one])
        taught = ["--teach", str(args.out / "one_class.csv")] if one else ["--status"]
        steps = {"create": [*hem, "--classes", classes, *taught],
                 "cold query": [*hem, "--query", "--batch", str(args.batch)]}
    results = []
    for name, command in steps.items():
        if name == "teach":  # the expert fills the query in
            with open(session / "to_label.csv", newline="") as handle:
                rows = list(csv.reader(handle))
            shutil.copy(session / "to_label.csv", args.out / "to_label.csv")
            write_csv(args.out / "filled.csv", [rows[0], *(row[:-1] + [answers[row[0]]] for row in rows[1:])])
        load_before = open("/proc/loadavg").read().split()[:3]
        result = {"step": name, "load_before": load_before, "utc_before": utc(),
                  **measure(command, args.out / f"{name.replace(' ', '_')}.log", args.rss_limit, 3600.0),
                  "load_after": open("/proc/loadavg").read().split()[:3], "utc_after": utc()}
        if name == "cold query" and (session / "to_label.csv").is_file():
            shutil.copy(session / "to_label.csv", args.out / "to_label_cold.csv")
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
        if result["rc"]:
            break
    print(json.dumps({"store": args.store, "start_labels": args.one_class if args.cold else len(first),
                      "batch": args.batch, "results": results}, indent=1))


def utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def serve(args) -> dict:
    """``hemoembed serve`` on the store: start-up until /health, then one retrain through the API."""
    import httpx

    args.out.mkdir(parents=True, exist_ok=True)
    encoder = args.encoder or Path(args.store).resolve().parent / "encoder.keras"
    results = []
    if not (args.out / "svm").is_dir():
        with open(args.labels, newline="") as handle:
            rows = [row for _, row in zip(range(args.serve_labels + 1), csv.reader(handle))]
        write_csv(args.out / "serve_labels.csv", rows)
        command = [sys.executable, "-m", "hemoembed", "fit-svm", args.store, "--labels",
                   str(args.out / "serve_labels.csv"), "--columns", "label", "--solver", "sgd", "--cv", "0",
                   "--bootstrap", "200", "--out", str(args.out / "svm"), "--overwrite"]
        results.append({"step": f"setup: fit-svm ({len(rows) - 1} labels)",
                        "load_before": open("/proc/loadavg").read().split()[:3], "utc_before": utc(),
                        **measure(command, args.out / "fit_svm.log", args.rss_limit, 3600.0),
                        "load_after": open("/proc/loadavg").read().split()[:3], "utc_after": utc()})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        if results[-1]["rc"]:
            return {"store": args.store, "results": results}
    data = args.out / "serve_data"
    shutil.rmtree(data, ignore_errors=True)
    if args.uploads:
        uploaded(args.store, data / "query_store", args.uploads)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(args.out / "serve.log", "w")
    load, when = open("/proc/loadavg").read().split()[:3], utc()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "hemoembed", "serve", "--store", args.store, "--model",
                                str(args.out / "svm"), "--encoder", str(encoder), "--data", str(data), "--port",
                                str(port)], env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
                               stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=3600.0)

    def until(ready, what: str) -> str:
        """Poll ``ready()`` (a server answer) until true; kill the server past the RSS limit."""
        while True:
            if process.poll() is not None:
                return f"server exited with {process.returncode} during {what}"
            if _status(process.pid, "VmRSS") > args.rss_limit * 2**20:
                process.kill()
                return f"over {args.rss_limit} GiB resident during {what}"
            try:
                if ready():
                    return ""
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    try:
        failed = until(lambda: http.get("/health").status_code == 200, "start-up")
        results.append({"step": "serve start (until /health)", "load_before": load, "utc_before": when,
                        "wall_s": round(time.perf_counter() - started, 2), "cpu_s": _cpu(process.pid),
                        "peak_rss_mib": round(_status(process.pid, "VmHWM") / 1024), "failed": failed,
                        "rss_now_mib": round(_status(process.pid, "VmRSS") / 1024),
                        "load_after": open("/proc/loadavg").read().split()[:3], "utc_after": utc()})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        if failed:
            return {"store": args.store, "results": results}
        load, when, cpu = open("/proc/loadavg").read().split()[:3], utc(), _cpu(process.pid)
        started = time.perf_counter()
        version = http.post("/api/retrain").json()["version"]
        failed = until(lambda: http.get("/api/model").json()["training"] is None, "retrain")
        status = {} if failed else http.get("/api/model").json()
        latest = [v for v in status.get("versions", []) if v.get("version") == version]
        results.append({"step": "serve retrain (POST /api/retrain until ready)", "load_before": load,
                        "utc_before": when, "wall_s": round(time.perf_counter() - started, 2),
                        "cpu_s": round(_cpu(process.pid) - cpu, 2),
                        "peak_rss_mib": round(_status(process.pid, "VmHWM") / 1024),
                        "rss_now_mib": round(_status(process.pid, "VmRSS") / 1024), "failed": failed,
                        "version": latest[0] if latest else None,
                        "load_after": open("/proc/loadavg").read().split()[:3], "utc_after": utc()})
        print(json.dumps(results[-1], default=str), file=sys.stderr, flush=True)
    finally:
        http.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
    return {"store": args.store, "serve_labels": args.serve_labels, "uploads": args.uploads, "results": results}


def uploaded(store_dir: str, query_store: Path, n: int) -> None:
    """The app's query store as after ``n`` uploads: the first ``n`` reference rows' embeddings, own paths."""
    from hemoembed.store.store import EmbeddingStore, make_part_table

    reference = EmbeddingStore.open(store_dir)
    store = EmbeddingStore.create(query_store, reference.fingerprint, reference.record, reference.dim)
    paths = [f"bench/upload_{i:05d}.png" for i in range(n)]
    store.append(make_part_table(paths, ["0" * 64] * n, [64] * n, [64] * n, reference.rows_embeddings(range(n))))


def _status(pid: int, field: str) -> int:
    """A /proc/PID/status field in kB (VmRSS now, VmHWM the peak), 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def write_csv(path: Path, rows) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


if __name__ == "__main__":
    main()
