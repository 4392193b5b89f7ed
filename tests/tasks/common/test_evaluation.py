"""Shared evaluation: numbers equal scikit-learn's, reports are complete and consistent, bootstrap is seeded."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, precision_recall_fscore_support

from hemoembed.errors import InputError
from hemoembed.tasks.common import evaluate, summarize, write_report, write_summary

CLASSES = ["band", "lympho", "mono", "neutro"]


@pytest.fixture
def predictions():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 2.0 * np.eye(4)[truth]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return [CLASSES[i] for i in truth], proba


def test_scores_equal_sklearn(predictions):
    y_true, proba = predictions
    report = evaluate(y_true, proba, CLASSES, column="type", seed=1, n_bootstrap=200)
    pred = [CLASSES[i] for i in proba.argmax(axis=1)]
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=CLASSES, zero_division=0)
    assert report["accuracy"] == pytest.approx(accuracy_score(y_true, pred))
    assert report["macro"]["f1"] == pytest.approx(f.mean())
    assert [row["f1"] for row in report["per_class"]] == pytest.approx(f.tolist())
    assert [row["precision"] for row in report["per_class"]] == pytest.approx(p.tolist())
    assert [row["recall"] for row in report["per_class"]] == pytest.approx(r.tolist())
    assert report["confusion_matrix"] == confusion_matrix(y_true, pred, labels=CLASSES).tolist()
    truth = np.array(y_true)
    ap = [average_precision_score(truth == c, proba[:, i]) for i, c in enumerate(CLASSES)]
    assert [row["average_precision"] for row in report["per_class"]] == pytest.approx(ap)


def test_report_is_consistent_and_bootstrap_seeded(predictions):
    y_true, proba = predictions
    report = evaluate(y_true, proba, CLASSES, seed=7, n_bootstrap=300)
    assert sum(row["support"] for row in report["per_class"]) == report["n_test"] == 300
    assert sum(row["predicted"] for row in report["per_class"]) == 300
    assert np.asarray(report["confusion_matrix"]).sum() == 300
    low, high = report["bootstrap"]["macro_f1_ci"]
    assert low < report["macro"]["f1"] < high and high - low < 0.2
    for row in report["per_class"]:
        assert row["f1_ci"][0] <= row["f1"] <= row["f1_ci"][1]
    again = evaluate(y_true, proba, CLASSES, seed=7, n_bootstrap=300)
    other = evaluate(y_true, proba, CLASSES, seed=8, n_bootstrap=300)
    assert again["bootstrap"] == report["bootstrap"]
    assert other["bootstrap"]["macro_f1_ci"] != report["bootstrap"]["macro_f1_ci"]


def test_unknown_label_and_shape_are_refused(predictions):
    y_true, proba = predictions
    with pytest.raises(InputError, match=r"column 'type' test set: label\(s\) 'Basophil' not among"):
        evaluate(["Basophil", *y_true[1:]], proba, CLASSES, column="type")
    with pytest.raises(InputError, match=r"of shape \(300, 3\) do not match 300 test labels and 4 classes"):
        evaluate(y_true, proba[:, :3], CLASSES, column="type")


def test_written_report_files(tmp_path, predictions):
    y_true, proba = predictions
    report = evaluate(y_true, proba, CLASSES, column="type", n_bootstrap=50)
    written = write_report(report, tmp_path / "type", y_true, proba)
    assert sorted(p.name for p in written) == ["confusion.png", "per_class.csv", "pr_curves.png", "report.json"]
    for png in ("confusion.png", "pr_curves.png"):
        assert (tmp_path / "type" / png).read_bytes()[:4] == b"\x89PNG"
    loaded = json.loads((tmp_path / "type" / "report.json").read_text())
    assert loaded["macro"]["f1"] == pytest.approx(report["macro"]["f1"])
    rows = list(csv.DictReader(open(tmp_path / "type" / "per_class.csv")))
    assert [r["class"] for r in rows] == CLASSES
    assert sum(int(r["support"]) for r in rows) == 300


def test_summary_mean_attribute_f1_excludes_main_column(tmp_path, predictions):
    y_true, proba = predictions
    perfect = np.eye(4)[[CLASSES.index(c) for c in y_true]]
    reports = {"label": evaluate(y_true, proba, CLASSES, column="label", n_bootstrap=20),
               "attr_a": evaluate(y_true, perfect, CLASSES, column="attr_a", n_bootstrap=20),
               "attr_b": evaluate(y_true, proba, CLASSES, column="attr_b", n_bootstrap=20)}
    summary = summarize(reports, main_column="label")
    expected = (1.0 + reports["attr_b"]["macro"]["f1"]) / 2
    assert summary["mean_attribute_macro_f1"] == pytest.approx(expected)
    assert summary["n_attribute_columns"] == 2
    write_summary(summary, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert [r["column"] for r in rows] == ["label", "attr_a", "attr_b"]
    assert float(rows[1]["macro_f1"]) == 1.0
