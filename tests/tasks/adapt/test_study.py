"""Adapter ablation study: every condition on shared splits, the table's statistics, the shot curve, files."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import make_sites

from hemoembed.errors import InputError
from hemoembed.tasks.adapt import CONDITIONS, AdaptConfig, prepare
from hemoembed.tasks.adapt.study import (
    ablation_table,
    curve_table,
    markdown_table,
    paired_p,
    run_ablation,
    shot_curve,
    write_study,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    sites = make_sites(tmp_path_factory.mktemp("ablation"), n_per_class=6)
    config = AdaptConfig(source=str(sites["run"]), target=str(sites["site1"]), source_images=str(sites["site0"]),
                         shots=10, ablation=True, repeats=1, source_per_class=6, source_support=2, lr=[1e-3],
                         epochs=[1], batch_size=[8], cv=0, head_epochs=20, curve_shots=[10, 15])
    return config, prepare(config)


@pytest.mark.slow
def test_ablation_runs_every_condition_on_shared_splits(prepared, tmp_path):
    config, prep = prepared
    rows = run_ablation(prep, config)
    assert [r["condition"] for r in rows] == list(CONDITIONS)  # one repeat: fine-tuning is slow on CPU
    assert {(r["n_shots"], r["n_test"]) for r in rows} == {(10, 20)}  # the same split for every condition
    assert all(0.0 <= r["accuracy"] <= 1.0 and set(r["recall"]) <= set(prep.labels) for r in rows)
    table = ablation_table(rows)
    assert [r["condition"] for r in table] == list(CONDITIONS)
    assert table[0]["vs"] == "" and table[0]["t_test_p"] is None
    assert all(r["vs"] == p["condition"] for p, r in zip(table, table[1:], strict=False))
    assert table[3]["accuracy_mean"] == pytest.approx(rows[3]["accuracy"]) and table[3]["accuracy_sd"] == 0.0
    write_study(tmp_path, rows, None)
    md = (tmp_path / "ablation.md").read_text()
    assert all(f"| {c} |" in md for c in CONDITIONS)
    assert (tmp_path / "ablation.png").stat().st_size > 1000 and (tmp_path / "ablation.csv").is_file()


def test_unknown_condition_and_missing_source_are_refused(prepared):
    from hemoembed.tasks.adapt.prepare import Prepared
    from hemoembed.tasks.adapt.study import run_condition

    config, prep = prepared
    with pytest.raises(InputError, match="unknown nonsense"):
        run_ablation(prep, AdaptConfig(conditions=["svm", "nonsense"]))
    bare = Prepared(prep.adapter, prep.manifest, prep.record, prep.labels, prep.notes, None)
    with pytest.raises(InputError, match="'mixed' needs labelled --source-images"):
        run_condition(bare, "mixed", np.arange(10), np.arange(10, 30), config, 0)


def test_shot_curve_has_accuracy_and_per_class_recall(prepared, tmp_path):
    config, prep = prepared
    rows = shot_curve(prep, config)
    assert [(r["shots"], r["repeat"]) for r in rows] == [(10, 0), (15, 0)]
    assert [r["n_shots"] for r in rows] == [10, 15]
    table = curve_table(rows)
    assert [r["shots"] for r in table] == [10, 15]
    assert set(table[1]["recall"]) == set(prep.labels)
    assert table[0]["accuracy_mean"] == pytest.approx(rows[0]["accuracy"])
    with pytest.raises(InputError, match="--shots 5 is fewer than --min-per-class 2"):
        shot_curve(prep, AdaptConfig(curve_shots=[5], repeats=1))
    write_study(tmp_path, None, rows)
    header = (tmp_path / "shot_curve.csv").read_text().splitlines()[0]
    assert header.startswith("shots,repeats,accuracy_mean,accuracy_sd,recall_")


def test_paired_tests_and_markdown():
    assert paired_p([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) == {"t_test_p": 1.0, "wilcoxon_p": 1.0}
    assert paired_p([0.5], [0.9]) == {"t_test_p": None, "wilcoxon_p": None}
    low = [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.53, 0.47]
    high = [v + 0.2 + 0.01 * i for i, v in enumerate(low)]
    p = paired_p(low, high)
    assert p["t_test_p"] < 1e-6 and p["wilcoxon_p"] < 0.01
    rows = [{"repeat": i, "condition": c, "accuracy": a, "macro_f1": a}
            for c, values in (("no_colour", low), ("full", high)) for i, a in enumerate(values)]
    table = ablation_table(rows)
    assert table[1]["vs"] == "no_colour" and table[1]["t_test_p"] == pytest.approx(p["t_test_p"])
    md = markdown_table(table)
    assert "| full | 8 | 0.735 ± 0.029 |" in md and md.count("\n") == 4
