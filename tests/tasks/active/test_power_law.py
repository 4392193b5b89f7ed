"""Power-law learning-curve fits, labels needed, and the Wilcoxon rate comparison."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_readable_png, power_law_rows

from hemoembed.tasks.active.power_law import (
    CEILING_GAP,
    MACRO,
    analyse,
    compare_rates,
    fit_power_law,
    labels_to_reach,
    power_law,
    rate_test_text,
)

N = np.arange(90, 9000, 180, dtype=float)


@pytest.mark.parametrize("pmax,k,n0,r", [(0.96, 2.0, 40.0, 0.6), (0.90, 30.0, -100.0, 1.0),
                                         (0.99, 0.8, 0.0, 0.4)])
def test_fit_recovers_known_parameters(pmax, k, n0, r):
    rng = np.random.default_rng(0)
    p = power_law(N, pmax, k, n0, r) + rng.normal(0.0, 5e-4, len(N))
    fit = fit_power_law(N, p)
    assert not fit.flat
    assert fit.pmax == pytest.approx(pmax, abs=0.01)
    assert fit.r == pytest.approx(r, rel=0.25)
    assert fit.rmse < 2e-3
    assert np.max(np.abs(fit(N) - power_law(N, pmax, k, n0, r))) < 0.005


def test_fit_is_robust_to_outliers_and_flat_curves():
    p = power_law(N, 0.95, 3.0, 0.0, 0.7)
    p[[5, 40]] -= 0.2  # two bad evaluations
    fit = fit_power_law(N, p)
    assert fit.pmax == pytest.approx(0.95, abs=0.01) and fit.r == pytest.approx(0.7, rel=0.25)
    flat = fit_power_law(N, np.full(len(N), 0.97) + np.random.default_rng(1).normal(0, 1e-4, len(N)))
    assert flat.flat and np.isnan(flat.r) and flat.pmax == pytest.approx(0.97, abs=1e-3)
    assert fit_power_law([90, 180], [0.5, 0.6]).flat  # too short to fit: no exception


def test_labels_to_reach_requires_staying_within_tolerance():
    n = [90, 180, 270, 360, 450]
    assert labels_to_reach(n, [0.80, 0.956, 0.94, 0.957, 0.958], target=0.96) == 360  # dip at 270 resets
    assert labels_to_reach(n, [0.80, 0.90, 0.92, 0.93, 0.94], target=0.96) is None
    assert labels_to_reach(n, [0.97, 0.97, 0.97, 0.97, 0.97], target=0.96) == 90


def test_analysis_compares_rates_and_labels_needed(tmp_path):
    classes = [f"c{i}" for i in range(6)]
    fast = {c: (0.97, 2.0, 1.0 + 0.1 * i) for i, c in enumerate(classes)} | {MACRO: (0.97, 2.0, 1.2)}
    slow = {c: (0.97, 2.0, 0.7 + 0.03 * i) for i, c in enumerate(classes)} | {MACRO: (0.97, 2.0, 0.75)}
    rows = power_law_rows({"uncertainty": fast, "random": slow}, {c: 0.97 for c in [*classes, MACRO]})
    result = analyse(rows, tmp_path)
    test = result["rate_test_uncertainty_vs_random"]
    assert test["classes"] == classes
    assert test["p_value"] == pytest.approx(1 / 64)  # all six rates larger: the smallest one-sided p
    reverse = compare_rates(result["fits"], "random", "uncertainty")
    assert reverse["p_value"] > 0.9
    # in words: a small p answers the question, a large one is no evidence either way (never "learns faster")
    assert rate_test_text(test) == ("does uncertainty learn faster than random? one-sided Wilcoxon p = 0.0156 over "
                                    "6 classes: yes at 0.05")
    assert rate_test_text(reverse).endswith(": not shown at 0.05")
    needed = result["labels_needed"]
    assert needed["uncertainty"] is not None and needed["random"] is not None
    assert needed["uncertainty"] < needed["random"]
    saved = json.loads((tmp_path / "analysis.json").read_text())
    assert saved["labels_needed"] == needed
    assert (tmp_path / "curve_fits.csv").read_text().splitlines()[0].startswith("strategy,class,pmax")
    assert (tmp_path / "fig_curves.png").stat().st_size > 5000 and not (tmp_path / "learning_curves.png").exists()


@pytest.mark.parametrize("cut, gap, noted", [(True, 0.04, True), (False, 0.04, False), (True, 0.0, False)])
def test_curves_stopped_early_with_different_ceilings_are_noted(cut, gap, noted, tmp_path):
    """Stopped before they level off (--max-labels), curves toward different ceilings have rates that measure
    different things: the rate test says so, naming how many classes; whole curves or equal ceilings do not."""
    classes = [f"c{i}" for i in range(6)]
    a = {c: (0.97, 2.0, 0.8) for c in classes} | {MACRO: (0.97, 2.0, 0.8)}
    b = {c: (0.97 - gap * (i % 2), 2.0, 0.8 + 0.05 * i) for i, c in enumerate(classes)} | {MACRO: (0.95, 2.0, 0.9)}
    rows = power_law_rows({"uncertainty": a, "random": b}, {c: 0.97 for c in [*classes, MACRO]})
    if cut:  # the ceiling is fitted on a pool twice as large as where the curves stop
        rows = [{**r, "n_labels": 2 * r["n_labels"]} if r["strategy"] == "all-labels" else r for r in rows]
    test = analyse(rows, tmp_path)["rate_test_uncertainty_vs_random"]
    assert test["p_value"] is not None  # the test is still made and reported
    assert_readable_png(tmp_path / "fig_rates.png")  # the note wrapped on the figure, not a strip
    text = rate_test_text(test)
    if noted:
        assert test["ceilings_apart"] == ["c1", "c3", "c5"]
        assert text.endswith(f"the curves stop at 8,910 of 17,820 pool labels and in 3 of 6 classes the two fitted "
                             f"ceilings differ by more than {100 * CEILING_GAP:g} F1 point: rates toward different "
                             "ceilings are not comparable (read the labels needed instead)"), text
    else:
        assert "not comparable" not in text and test.get("ceilings_apart", []) == []
