"""Every figure a user looks at, rendered from a small fixture: a readable size, words in the titles, numbers
that can be read, and no colour meaning two things. (The active-learning and GradCAM figures are tested
beside their tasks: tests/tasks/active/test_active_figures.py, tests/explain/test_gradcam.py.)"""
from __future__ import annotations

import csv
import json

import numpy as np
from helpers import assert_readable_png, run_script

from hemoembed.plotting import save_figure
from hemoembed.tasks.common import evaluate, write_report
from hemoembed.tasks.common.reports import confusion_figure

CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def _predictions(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.asarray(CLASSES)[rng.integers(0, len(CLASSES), n)]
    proba = rng.dirichlet(np.ones(len(CLASSES)), n)
    proba[np.arange(n), [CLASSES.index(c) for c in y]] += 1.5 * rng.random(n)
    return y, proba / proba.sum(axis=1, keepdims=True)


def test_confusion_matrix_numbers_read_on_dark_and_light_cells(tmp_path):
    y, proba = _predictions()
    report = evaluate(y, proba, CLASSES, column="label", n_bootstrap=20)
    write_report(report, tmp_path, y, proba, subject="Linear SVM on the embedding")
    for name in ("confusion.png", "pr_curves.png"):
        assert_readable_png(tmp_path / name)
    fig = confusion_figure(report, "Linear SVM on the embedding")
    ax = fig.axes[0]
    cm = np.asarray(report["confusion_matrix"])
    share = cm / cm.sum(axis=1, keepdims=True)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    for (i, j), value in np.ndenumerate(share):
        colour = texts[(i, j)].get_color()
        assert colour == ("white" if value > 0.55 else "black"), (i, j, value, colour)
        assert texts[(i, j)].get_fontsize() >= 9
    assert ax.get_title().startswith("Linear SVM on the embedding\nconfusion matrix of 'label'")
    assert len(fig.axes) == 2  # the matrix and its colour bar


def test_adapter_figures_name_the_model_and_the_new_site():
    from hemoembed.tasks.adapt.prepare import AdaptConfig
    from hemoembed.tasks.adapt.workflow import MODE_WORDS, adapter_subject

    y, proba = _predictions()
    report = evaluate(y, proba, CLASSES, n_bootstrap=20)
    titles = {}
    for mode, colour in (("svm", True), ("finetune", False)):
        config = AdaptConfig(source="runs/pbc64", target="cells/site1.csv", mode=mode, colour_transform=colour)
        titles[mode] = confusion_figure(report, adapter_subject(config, 20)).axes[0].get_title()
        assert MODE_WORDS[mode] in titles[mode] and "20 shots" in titles[mode], titles[mode]
        assert "new site site1.csv" in titles[mode], titles[mode]
    assert "after Reinhard" in titles["svm"] and "without colour transfer" in titles["finetune"]


def test_support_curve_spans_the_data_and_says_linear_svm(tmp_path):
    from hemoembed.tasks.svm.support_curve import write_support_curve

    rows = [{"per_class": str(k), "n_labels": 5 * k, "repeat": r, "macro_f1": 0.7 + 0.02 * np.log(k) + 0.01 * r}
            for k in (2, 5, 10, 20) for r in range(3)]
    write_support_curve(rows, tmp_path, "Linear SVM on the embedding: 'label' with few labels")
    assert_readable_png(tmp_path / "learning_curve.png")


def test_f1_axis_spans_the_data_with_f1_tick_labels():
    """The learning-curve axis −log(1−F1) covers the data (not 0 to 0.999) and its ticks read as F1 values."""
    from hemoembed.plotting import pyplot
    from hemoembed.tasks.common import f1_axis, neg_log_error

    for f1 in ([0.70, 0.72, 0.76], [0.90, 0.95, 0.985], [0.30, 0.55, 0.62]):
        fig, ax = pyplot().subplots()
        f1_axis(ax, f1)
        low, high = ax.get_ylim()
        span = float(neg_log_error(max(f1)) - neg_log_error(min(f1)))
        assert low <= neg_log_error(min(f1)) and neg_log_error(max(f1)) <= high, (f1, low, high)
        assert high - low < 1.5 * span + 0.05, (f1, low, high)  # the data fill the axis
        ticks = [float(t.get_text()) for t in ax.get_yticklabels()]
        assert 4 <= len(ticks) <= 7 and all(0 < t < 1 for t in ticks), (f1, ticks)
        np.testing.assert_allclose(ax.get_yticks(), neg_log_error(np.asarray(ticks)))  # labels say F1 at its place
        assert "F1" in ax.get_ylabel()


def test_label_efficiency_script(tmp_path):
    for column, top in (("label", 0.95), ("cell_size", 0.8)):
        (tmp_path / "svm" / column).mkdir(parents=True)
        with open(tmp_path / "svm" / column / "learning_curve_summary.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["per_class", "n_labels", "repeats", "macro_f1_mean", "macro_f1_std"])
            for k, n in ((2, 10), (5, 25), (10, 50), ("all", 400)):
                writer.writerow([k, n, 3, top - 0.2 / np.sqrt(n), 0.01])
    out = run_script("fig_label_efficiency.py", tmp_path / "svm", "--out", tmp_path / "fig.png")
    assert out.stdout.strip() == str(tmp_path / "fig.png")
    assert_readable_png(tmp_path / "fig.png")


def test_ablation_script_names_the_site(tmp_path):
    conditions = ["no_adaptation", "colour", "svm"]
    rows = [{"condition": c, "repeat": r, "accuracy": 0.5 + 0.1 * i + 0.02 * r} for i, c in enumerate(conditions)
            for r in range(3)]
    result = {"subject": "new site site1.csv, source run pretrain",
              "ablation_rows": rows,
              "ablation_table": [{"condition": c, "accuracy_mean": 0.5 + 0.1 * i + 0.02, "accuracy_sd": 0.02}
                                 for i, c in enumerate(conditions)],
              "curve_table": [{"shots": n, "accuracy_mean": 0.6 + n / 200, "accuracy_sd": 0.03,
                               "recall": {c: 0.5 + n / 150 for c in CLASSES[:3]}} for n in (10, 20, 50)]}
    (tmp_path / "ablation.json").write_text(json.dumps(result))
    out = run_script("fig_ablation.py", tmp_path / "ablation.json", "--out", tmp_path / "fig.png")
    assert out.stdout.strip() == f"figure written to {tmp_path / 'fig.png'}"
    assert_readable_png(tmp_path / "fig.png")


def test_tsne_panels_never_share_a_colour(tmp_path):
    from hemoembed.explain.plots import PANEL_PALETTES, category_colours

    rng = np.random.default_rng(0)
    labels = np.asarray(CLASSES)[rng.integers(0, 5, 120)]
    sites = np.asarray(["site0", "site1"])[rng.integers(0, 2, 120)]
    with open(tmp_path / "coordinates.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "x", "y", "label", "site"])
        for i, (x, y) in enumerate(rng.normal(size=(120, 2))):
            writer.writerow([f"c/{i}.png", x, y, labels[i], sites[i]])
    run_script("fig_tsne.py", tmp_path, "--out", tmp_path / "fig.png")
    assert_readable_png(tmp_path / "fig.png")
    first = set(category_colours(list(labels), PANEL_PALETTES[0]).values())
    second = set(category_colours(list(sites), PANEL_PALETTES[1]).values())
    assert not first & second


def test_neighbour_gallery_is_readable(tmp_path):
    from hemoembed.data.imageio import save_png
    from hemoembed.data.synthetic import render_cell, site_style
    from hemoembed.explain.gallery import render_gallery

    paths = []
    for i, cls in enumerate(CLASSES):
        save_png(render_cell(np.random.default_rng(i), cls, site_style(0, 0), 64), tmp_path / f"{cls}.png")
        paths.append(f"{cls}.png")
    render_gallery([tmp_path / paths[0]], [paths[1:]], np.array([[0.1, 0.2, 0.3, 0.4]]), [CLASSES[1:]], tmp_path,
                   tmp_path / "gallery.png")
    width, height = assert_readable_png(tmp_path / "gallery.png", max_aspect=6.0)  # a row per query: wide
    assert width / 5 >= 250  # each cell at least 250 px wide


def test_save_figure_writes_through_a_temporary_file(tmp_path):
    from hemoembed.plotting import pyplot

    fig, ax = pyplot().subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    assert save_figure(fig, tmp_path / "f.png") == tmp_path / "f.png"
    assert not [p for p in tmp_path.iterdir() if p.name != "f.png"]


def test_every_figure_script_refuses_bad_input_in_one_line(tmp_path):
    """A missing or wrong input is one line on stderr and exit 2, as in the CLI, never a traceback."""
    from helpers import REPO

    missing = tmp_path / "missing"
    cases = {"fig_ablation.py": [missing / "ablation.json"], "fig_active_learning.py": [missing],
             "fig_gradcam.py": [missing, "--out", tmp_path / "f.png"],
             "fig_label_efficiency.py": [missing, "--out", tmp_path / "f.png"],
             "fig_tsne.py": [missing, "--out", tmp_path / "f.png"]}
    assert set(cases) == {p.name for p in (REPO / "scripts").glob("fig_*.py")}  # a new script joins this test
    for name, args in cases.items():
        done = run_script(name, *args, check=False)
        assert done.returncode == 2, (name, done.stderr[-1500:])
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, (name, done.stderr)
        assert str(missing) in done.stderr and not (tmp_path / "f.png").exists(), (name, done.stderr)

    with open(tmp_path / "coordinates.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "x", "y", "label"], ["a.png", 0.0, 1.0, "basophil"]])
    done = run_script("fig_tsne.py", tmp_path, "--out", tmp_path / "f.png", "--columns", "site", check=False)
    assert done.returncode == 2 and done.stderr.strip().endswith("no colour column site (it has label)"), done.stderr
