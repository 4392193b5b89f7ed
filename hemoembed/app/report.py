"""The batch summary (the differential count a lab reports) and the CSV export."""
from __future__ import annotations

import datetime as _dt
from collections import Counter
from typing import Any

from . import lib

EXPORT_COLUMNS = ("id", "filename", "image", "sha256", "batch", "status", "error", "model_version",
                  "predicted_label", "confidence", "uncertainty")
EXPORT_TAIL = ("corrected_label", "final_label", "reviewer", "review_seconds", "corrected_at")


def final_label(cell: dict[str, Any]) -> str:
    """The reviewer's label when there is one, else the prediction."""
    return cell.get("corrected") or cell.get("label") or ""


def summary(cells: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """Per class: final count and percentage of the classified cells, predicted and corrected counts."""
    done = [c for c in cells if c["status"] == "done"]
    final = Counter(final_label(c) for c in done)
    predicted = Counter(c["label"] for c in done)
    reviewed = [c for c in done if c.get("corrected")]
    rows = [{"class": name, "count": final.get(name, 0), "percent": round(100.0 * final.get(name, 0) / len(done), 2)
             if done else 0.0, "predicted": predicted.get(name, 0),
             "corrected_to": sum(1 for c in reviewed if c["corrected"] == name)}
            for name in classes]
    return {"cells": len(cells), "classified": len(done), "failed": sum(c["status"] == "error" for c in cells),
            "queued": sum(c["status"] == "queued" for c in cells), "reviewed": len(reviewed),
            "changed": sum(1 for c in reviewed if c["corrected"] != c["label"]), "classes": rows}


def export_csv(cells: list[dict[str, Any]], classes: list[str]) -> str:
    """One row per cell: prediction, every class probability, the correction and the reviewer's time."""
    header = [*EXPORT_COLUMNS, *(f"p_{c}" for c in classes), *EXPORT_TAIL]
    rows: list[list[Any]] = [header]
    for c in cells:
        probabilities = c.get("probabilities") or {}
        rows.append([c["id"], c["filename"], c["image"], c["sha256"], c["batch"], c["status"], c["error"] or "",
                     "" if c["version"] is None else c["version"], c["label"] or "",
                     _number(c["confidence"]), _number(c["uncertainty"]),
                     *(_number(probabilities.get(name)) for name in classes),
                     c.get("corrected") or "", final_label(c) if c["status"] == "done" else "",
                     c.get("reviewer") or "", _number(c.get("seconds")), _iso(c.get("corrected_at"))])
    return lib.csv_text(rows)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return _dt.datetime.fromtimestamp(stamp, _dt.UTC).isoformat(timespec="seconds")
