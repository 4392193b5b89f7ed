"""The active-learning figures: drawn once from the saved fits and test (never refitted), readable, and honest
when the rates cannot be estimated."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_readable_png, power_law_rows, run_script

from hemoembed.tasks.active.figures import curves_figure, rates_figure, read_fits, redraw
from hemoembed.tasks.active.power_law import MACRO, R_MAX, analyse, compare_rates, rate_test_text
from hemoembed.tasks.active.simulation import tidy_csv_text

CLASSES = [f"class {i}" for i in range(7)]


def _study():
    fast = {c: (0.97, 2.0, 1.0 + 0.1 * i) for i, c in enumerate(CLASSES)} | {MACRO: (0.97, 2.0, 1.2)}
    slow = {c: (0.97, 2.0, 0.7 + 0.03 * i) for i, c in enumerate(CLASSES)} | {MACRO: (0.97, 2.0, 0.75)}
    return power_law_rows({"uncertainty": fast, "random": slow}, {c: 0.97 for c in [*CLASSES, MACRO]})


def test_the_command_draws_a_readable_grid_of_curves_and_the_rates(tmp_path):
    analyse(_study(), tmp_path)
    assert not (tmp_path / "learning_curves.png").exists()  # one curves figure, not two
    width, height = assert_readable_png(tmp_path / "fig_curves.png")
    assert height > width / 2.5  # 8 panels in a 3-column grid, not a 3943x588 strip
    assert_readable_png(tmp_path / "fig_rates.png")
    fig = curves_figure(_study(), read_fits(tmp_path / "curve_fits.csv"))
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 8 and panels[0].get_title() == "macro-F1 (all classes)"
    labels = [t.get_text() for t in panels[0].get_yticklabels()]
    assert labels and all(0 < float(t) < 1 for t in labels)  # F1 tick labels on the −log(1 − F1) axis
    low, high = panels[0].get_ylim()
    assert low > 0.5 and high < -np.log(1 - 0.98)  # the axis spans the data (F1 ≈ 0.5–0.97), not 0–0.999


def test_figures_show_the_saved_p_value_not_a_refit(tmp_path):
    (tmp_path / "results.csv").write_text(tidy_csv_text(_study()))
    analyse(_study(), tmp_path)
    saved = json.loads((tmp_path / "analysis.json").read_text())
    saved["rate_test_uncertainty_vs_random"]["p_value"] = 0.4242  # whatever was saved is what is drawn
    (tmp_path / "analysis.json").write_text(json.dumps(saved))
    fig = rates_figure(read_fits(tmp_path / "curve_fits.csv"), saved)
    assert "p = 0.424" in fig.axes[0].get_title()
    assert fig.axes[0].get_title().endswith(rate_test_text(saved["rate_test_uncertainty_vs_random"], sep="\n"))
    out = run_script("fig_active_learning.py", tmp_path)
    assert out.stdout.split() == [str(tmp_path / "fig_curves.png"), str(tmp_path / "fig_rates.png")]
    assert_readable_png(tmp_path / "fig_rates.png")
    assert redraw(tmp_path)[1] == tmp_path / "fig_rates.png"
    (tmp_path / "analysis.json").unlink()
    missing = run_script("fig_active_learning.py", tmp_path, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


@pytest.mark.slow  # 16 s of CPU: fits at the bound run to their evaluation limit
def test_rates_all_at_the_bound_are_called_not_identifiable(tmp_path):
    """Curves that are flat after their first point push every rate to the bound: no bars of 5, no test."""
    jump = {c: (0.95, 0.1 * 20.0 ** 5, 5.0) for c in (CLASSES[0], MACRO)}  # such fits are slow: one class
    rows = power_law_rows({"uncertainty": jump, "random": jump}, {c: 0.95 for c in (CLASSES[0], MACRO)},
                          n=np.arange(20, 200, 20, dtype=float))
    result = analyse(rows, tmp_path)
    fits = [f for f in result["fits"] if f["class"] != MACRO]
    assert fits and all(f["r"] >= R_MAX * 0.98 and not f["flat"] for f in fits)
    test = compare_rates(result["fits"])
    assert test["p_value"] is None and "not identifiable" in test["note"]
    fig = rates_figure(result["fits"], result)
    assert fig.axes[0].get_title() == "Per-class learning rates: not identifiable"
    assert not fig.axes[0].patches  # no bars
    assert_readable_png(tmp_path / "fig_rates.png")
