"""Benchmark: a labelling session (``active-learn --session``) on a large store. Prints JSON.

Usage (from the repository root; CPU-heavy, run under /work/bin/heavy on the shared machine):
    .venv/bin/python benchmarks/session_scale.py /work/runs/store3/scale/store_1000000 \\
        /work/runs/store3/scale/labels_1000000.csv --out /tmp/session_1m > session.json

Three steps, each its own process (``scale.py``'s :func:`measure`: wall s, CPU s, peak RSS from ``wait4``):
``start`` creates the session with the store's classes and teaches the first ``--start`` rows of LABELS;
``query`` writes a batch of ``--batch``; ``teach`` ingests that batch filled in from LABELS (the expert).
OUT/session is replaced; OUT/to_label.csv keeps the query (compare two versions' queries byte for byte).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

from scale import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("labels", type=Path, help="CSV path,label for every row (the expert's answers)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start", type=int, default=300, help="labels taught when the session starts")
    parser.add_argument("--batch", type=int, default=90)
    parser.add_argument("--rss-limit", type=float, default=18.0, help="kill a step past this many GiB")
    args = parser.parse_args()
    with open(args.labels, newline="") as handle:
        answers = dict(tuple(row[:2]) for row in list(csv.reader(handle))[1:])
    session = args.out / "session"
    shutil.rmtree(session, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    first = list(answers.items())[: args.start]
    write_csv(args.out / "start.csv", [["path", "label"], *first])
    hem = [sys.executable, "-m", "hemoembed", "active-learn", args.store, "--session", str(session)]
    steps = {"start": [*hem, "--classes", ",".join(sorted(set(answers.values()))), "--teach",
                       str(args.out / "start.csv")],
             "query": [*hem, "--query", "--batch", str(args.batch)],
             "teach": [*hem, "--teach", str(args.out / "filled.csv")]}
    results = []
    for name, command in steps.items():
        if name == "teach":  # the expert fills the query in
            with open(session / "to_label.csv", newline="") as handle:
                rows = list(csv.reader(handle))
            shutil.copy(session / "to_label.csv", args.out / "to_label.csv")
            write_csv(args.out / "filled.csv", [rows[0], *(row[:-1] + [answers[row[0]]] for row in rows[1:])])
        load_before = open("/proc/loadavg").read().split()[:3]
        result = {"step": name, "load_before": load_before,
                  **measure(command, args.out / f"{name}.log", args.rss_limit, 3600.0),
                  "load_after": open("/proc/loadavg").read().split()[:3]}
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
        if result["rc"]:
            break
    print(json.dumps({"store": args.store, "start_labels": len(first), "batch": args.batch, "results": results},
                     indent=1))


def write_csv(path: Path, rows) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


if __name__ == "__main__":
    main()
