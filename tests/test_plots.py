"""Tests for trainkit.plots: each figure shows the report's own numbers (sklearn's curves, the report's bins and
metrics), figures are closed in pyplot, the threshold widget follows at_threshold, every plot of the wrong kind of
report fails clearly, and scoring never imports matplotlib. The widget in a real browser: test_browser_widgets.py."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import precision_recall_curve, roc_curve

from trainkit.core import DataError
from trainkit.data import penguins_csv
from trainkit.datasets import load_datasets, load_penguins
from trainkit.evaluate import Report, at_threshold, evaluate
from trainkit.models import SklearnModel
from trainkit.plots import (ReportLike, plot_confusion, plot_pr, plot_reliability, plot_report, plot_residuals,
                            plot_roc, threshold_widget)

plt = pytest.importorskip("matplotlib.pyplot")


# ------------------------------------------------------------------------------------------------ fixtures: reports


@pytest.fixture(scope="module")
def binary() -> Report:
    cancer = load_datasets("breast_cancer")
    return evaluate(SklearnModel(LogisticRegression(C=0.1, max_iter=1000)).fit(cancer), cancer, "valid", name="logistic")


@pytest.fixture(scope="module")
def multi() -> Report:
    penguins = load_penguins(seed=42, source=penguins_csv())  # the shipped CSV: no course database needed
    forest = SklearnModel(RandomForestClassifier(30, max_depth=2, random_state=0)).fit(penguins)
    return evaluate(forest, penguins, "valid", group="island", name="forest")


@pytest.fixture(scope="module")
def regression() -> Report:
    diabetes = load_datasets("diabetes")
    return evaluate(SklearnModel(Ridge(alpha=1.0)).fit(diabetes), diabetes, "valid", name="ridge")


# ------------------------------------------------------------------------------------------------ the figures


def test_plots_per_task(multi, regression):
    from matplotlib.figure import Figure
    before = plt.get_fignums()
    figs = multi.plots(normalize=True)
    assert list(figs) == ["confusion", "roc", "pr", "reliability"] and all(isinstance(f, Figure) for f in figs.values())
    assert len(figs["roc"].axes[0].get_lines()) == 4  # one per species, and chance
    texts = [t.get_text() for t in figs["confusion"].axes[0].texts]
    assert all("." in t for t in texts)  # normalised: shares, not counts
    assert list(regression.plots()) == ["residuals"]
    assert list(plot_report(multi)) == list(figs)
    assert plt.get_fignums() == before  # nothing left open in pyplot


def test_confusion_shows_the_report_counts_and_shares(multi):
    counts = [int(t.get_text()) for t in plot_confusion(multi).axes[0].texts]
    assert counts == np.ravel(multi.confusion).tolist()
    shares = [float(t.get_text()) for t in plot_confusion(multi, normalize=True).axes[0].texts]
    recall = [multi.per_class[c]["recall"] for c in multi.classes]
    assert np.diag(np.reshape(shares, (3, 3))) == pytest.approx(recall, abs=0.005)  # two decimals shown


def test_roc_and_pr_curves_are_sklearns(binary):
    y, p1 = binary.y_true, binary.scores[:, 1]
    ax = plot_roc(binary).axes[0]
    fpr, tpr, _ = roc_curve(y, p1)
    np.testing.assert_allclose(ax.get_lines()[0].get_xydata(), np.c_[fpr, tpr])
    assert f"AUC {binary.metrics['roc_auc']:.3f}" in ax.get_legend().get_texts()[0].get_text()
    ax = plot_pr(binary).axes[0]
    prec, rec, _ = precision_recall_curve(y, p1)
    curve, chance = ax.get_lines()[:2]
    np.testing.assert_allclose(curve.get_xdata(), rec)
    np.testing.assert_allclose(curve.get_ydata(), prec)
    assert chance.get_ydata()[0] == pytest.approx(y.mean())  # the share of positives
    assert f"AP {binary.metrics['average_precision']:.3f}" in ax.get_legend().get_texts()[0].get_text()


def test_reliability_draws_the_report_bins(binary, multi):
    for r in (binary, multi):
        fig = plot_reliability(r)
        dots = fig.axes[0].get_lines()[1]
        np.testing.assert_allclose(dots.get_xydata(), np.c_[r.calibration["confidence"], r.calibration["frequency"]])
        assert [p.get_height() for p in fig.axes[1].patches] == r.calibration["count"]
        assert f"ECE {r.metrics['ece']:.3f}" in fig.axes[0].get_title("left")


def test_residuals_are_true_minus_predicted(regression):
    a, b = plot_residuals(regression).axes
    np.testing.assert_allclose(a.collections[0].get_offsets(), np.c_[regression.y_true, regression.scores])
    np.testing.assert_allclose(b.collections[0].get_offsets(),
                               np.c_[regression.scores, regression.y_true - regression.scores])


def test_a_report_read_back_from_json_plots_the_same(binary):
    back = Report.from_json(json.loads(json.dumps(binary.to_json())))
    assert isinstance(binary, ReportLike) and isinstance(back, ReportLike)  # has every field the plots read
    np.testing.assert_allclose(plot_roc(back).axes[0].get_lines()[0].get_xydata(),
                               plot_roc(binary).axes[0].get_lines()[0].get_xydata())


# ------------------------------------------------------------------------------------------------ the threshold widget


def test_threshold_widget_headless(binary):
    r = binary
    w = threshold_widget(r)
    for t in (0.2, 0.8):
        w.slider.value = t
        expect = at_threshold(r.y_true, r.scores[:, 1], t)
        (tn, fp), (fn, tp) = expect["confusion"]
        assert f"recall {expect['recall']:.3f}" in w.html.value and f"precision {expect['precision']:.3f}" in w.html.value
        assert all(f">{v}</td>" in w.html.value for v in (tn, fp, fn, tp))
    assert (w.slider.min, w.slider.max) == (0.0, 1.0)
    assert threshold_widget(r, value=0.3).slider.value == 0.3


# ------------------------------------------------------------------------------------------------ bad input


def test_plot_and_widget_of_the_wrong_kind(multi, regression):
    with pytest.raises(DataError, match="needs a classification report"):
        plot_roc(regression)
    for plot in (plot_confusion, plot_pr, plot_reliability):
        with pytest.raises(DataError, match="needs a classification report; this one is regression"):
            plot(regression)
    with pytest.raises(DataError, match="needs a regression report"):
        plot_residuals(multi)
    with pytest.raises(DataError, match="binary classification report"):
        threshold_widget(multi)
    with pytest.raises(DataError, match="binary classification report"):
        threshold_widget(regression)


# ------------------------------------------------------------------------------------------------ structure


def test_scoring_never_imports_matplotlib():
    "evaluate imports trainkit.plots only inside Report.plots() and save(): a service scoring a model needs no matplotlib."
    code = ("import sys\n"
            "from trainkit.datasets import load_datasets\n"
            "from trainkit.evaluate import evaluate\n"
            "from trainkit.models import SklearnModel\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "d = load_datasets('breast_cancer')\n"
            "r = evaluate(SklearnModel(LogisticRegression(max_iter=1000)).fit(d), d, 'valid')\n"
            "r.to_markdown(); r.to_json(); r.at_threshold(0.3)\n"
            "print(','.join(sorted(m for m in ('matplotlib', 'trainkit.plots') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"scoring imported {out.stdout.strip()}"


def test_every_report_figure_is_in_the_course_style(binary, multi, regression):
    "Each saved-report figure has a title, each axis labelled axes (a stacked panel shares its x label); lines use PALETTE."
    from trainkit.core import PALETTE
    for report in (binary, multi, regression):
        for name, fig in plot_report(report).items():
            assert any(ax.get_title(loc="left") or ax.get_title() for ax in fig.axes), name
            for ax in fig.axes:  # an axis sharing x with a labelled one (a panel stacked above it) needs no x label of its own
                xlabel = any(a.get_xlabel() for a in ax.get_shared_x_axes().get_siblings(ax))
                assert xlabel and ax.get_ylabel(), (name, ax.get_xlabel(), ax.get_ylabel())
            colours = [l.get_color() for ax in fig.axes for l in ax.lines if l.get_linestyle() not in (":",)]
            assert all(c in PALETTE or c in ("k", "black", "#000000") for c in colours), (name, colours)
