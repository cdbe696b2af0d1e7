"""Tests for trainkit.fairness: per-group metrics and both gaps against fairlearn, the planted bias, reweighing,
the bootstrap (counts against copied rows, intervals against SciPy), the plot, and the errors bad input gets."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (MetricFrame, demographic_parity_difference, equalized_odds_difference,
                               false_positive_rate, selection_rate, true_positive_rate)
from scipy.stats import bootstrap
from sklearn.metrics import accuracy_score

from trainkit.core import DataError
from trainkit.fairness import (demographic_parity_gap, drop_positives, equalized_odds_gap, fairness_ci, gaps,
                               group_metrics, group_rates, plot_fairness, resample_counts, reweigh)

matplotlib.use("Agg")


def _case(n=600, n_groups=3, seed=0):
    "Random labels, predictions that depend on the group, and `n_groups` groups named by strings."
    rng = np.random.default_rng(seed)
    g = rng.choice([f"g{i}" for i in range(n_groups)], size=n)
    y = rng.integers(0, 2, n)
    pred = (rng.random(n) < np.where(g == "g0", 0.6, 0.3)).astype(int)
    return y, pred, g


# --- a case small enough to count by hand -------------------------------------------------------------------
Y = [1, 1, 0, 0, 1, 0, 0, 0]
P = [1, 0, 1, 0, 1, 1, 0, 0]
G = ["a", "a", "a", "a", "b", "b", "b", "b"]


def test_group_metrics_by_hand():
    t = group_metrics(Y, P, G)
    assert list(t.index) == ["a", "b"] and list(t.columns) == ["n", "accuracy", "selection_rate", "tpr", "fpr"]
    assert t.loc["a"].tolist() == [4, 0.5, 0.5, 0.5, 0.5]  # a: TP, FN, FP, TN
    assert t.loc["b"].tolist() == [4, 0.75, 0.5, 1.0, 1 / 3]  # b: TP, FP, TN, TN
    assert demographic_parity_gap(Y, P, G) == 0.0
    assert equalized_odds_gap(Y, P, G) == 0.5  # TPR 0.5 vs 1.0; FPR 0.5 vs 1/3


def test_gaps_overall_accuracy_weights_groups_by_size():
    _, r = group_rates([1, 0, 0, 1, 1, 0], [1, 0, 0, 0, 0, 1], ["a", "a", "a", "a", "b", "b"])
    assert gaps(r)["accuracy"][0] == pytest.approx(3 / 6)


# --- the oracle: fairlearn -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_groups", [2, 3, 5])
def test_against_fairlearn(n_groups):
    y, pred, g = _case(n_groups=n_groups, seed=n_groups)
    frame = MetricFrame(metrics={"accuracy": accuracy_score, "selection_rate": selection_rate,
                                 "tpr": true_positive_rate, "fpr": false_positive_rate},
                        y_true=y, y_pred=pred, sensitive_features=g)
    ours = group_metrics(y, pred, g)
    np.testing.assert_allclose(ours[frame.by_group.columns].to_numpy(), frame.by_group.to_numpy(), atol=1e-12)
    assert demographic_parity_gap(y, pred, g) == pytest.approx(
        demographic_parity_difference(y, pred, sensitive_features=g), abs=1e-12)
    assert equalized_odds_gap(y, pred, g) == pytest.approx(
        equalized_odds_difference(y, pred, sensitive_features=g), abs=1e-12)


def test_numeric_and_boolean_inputs():
    y, pred, g = _case(n_groups=2)
    codes = (g == "g1").astype(int)
    assert group_metrics(y.astype(bool), pred.astype(float), codes).index.tolist() == [0, 1]
    assert demographic_parity_gap(y, pred, codes) == demographic_parity_gap(y, pred, g)


# --- errors that name what is wrong --------------------------------------------------------------------------
def test_labels_must_be_zero_or_one():
    with pytest.raises(DataError, match=r"y_true must hold only 0 and 1.*\[2\]"):
        group_metrics([0, 1, 2], [0, 1, 1], ["a", "b", "a"])
    with pytest.raises(DataError, match=r"y_pred must hold only 0 and 1.*0\.7"):
        group_metrics([0, 1, 1], [0, 0.7, 1], ["a", "b", "a"])
    with pytest.raises(DataError, match="1-D"):
        group_metrics(np.zeros((3, 2)), [0, 1, 1], ["a", "b", "a"])


def test_lengths_must_match():
    with pytest.raises(DataError, match="got 3, 2 and 3"):
        group_metrics([0, 1, 1], [0, 1], ["a", "b", "a"])


def test_needs_two_groups():
    with pytest.raises(DataError, match=r"at least two groups.*\['a'\]"):
        demographic_parity_gap([0, 1], [0, 1], ["a", "a"])


def test_group_without_positives_is_named():
    with pytest.raises(DataError, match=r"\['b'\] have no positive rows.*TPR is undefined"):
        equalized_odds_gap([1, 0, 0, 0], [1, 0, 0, 1], ["a", "a", "b", "b"])
    with pytest.raises(DataError, match=r"\['a'\] have no negative rows.*FPR"):
        group_metrics([1, 1, 0, 1], [1, 0, 0, 1], ["a", "a", "b", "b"])


# --- the planted bias ----------------------------------------------------------------------------------------
def test_drop_positives_touches_only_the_group_positives():
    y, _, g = _case(n=4000, n_groups=2)
    keep = drop_positives(y, g, "g1", keep=0.25, seed=3)
    assert keep[(g == "g0") | (y == 0)].all()  # every other row stays
    kept_share = keep[(g == "g1") & (y == 1)].mean()
    assert kept_share == pytest.approx(0.25, abs=0.04)
    assert np.array_equal(keep, drop_positives(y, g, "g1", keep=0.25, seed=3))  # the seed fixes the draw
    assert drop_positives(y, g, "g1", keep=1.0).all() and not drop_positives(y, g, "g1", keep=0.0)[(g == "g1") & (y == 1)].any()


def test_drop_positives_errors():
    with pytest.raises(DataError, match="between 0 and 1, got 1.5"):
        drop_positives([0, 1], ["a", "b"], "a", keep=1.5)
    with pytest.raises(DataError, match=r"group 'c' is not in groups \['a', 'b'\]"):
        drop_positives([0, 1], ["a", "b"], "c", keep=0.5)
    with pytest.raises(DataError, match="got 2 and 3"):
        drop_positives([0, 1], ["a", "b", "a"], "a", keep=0.5)


# --- reweighing ----------------------------------------------------------------------------------------------
def test_reweigh_makes_label_and_group_independent():
    y, _, g = _case(n=900, n_groups=3, seed=5)
    y = np.where((g == "g2") & (np.arange(900) % 3 == 0), 0, y)  # a group with fewer positives
    w = reweigh(y, g)
    assert w.sum() == pytest.approx(len(y))
    for name in np.unique(g):
        assert np.average(y[g == name], weights=w[g == name]) == pytest.approx(y.mean())
    # one cell by hand: P(g)·P(y) / P(g, y)
    cell = (g == "g2") & (y == 1)
    assert w[cell][0] == pytest.approx((g == "g2").mean() * y.mean() / cell.mean())


def test_reweigh_balanced_data_gives_ones():
    assert np.allclose(reweigh([0, 1, 0, 1], ["a", "a", "b", "b"]), 1.0)


def test_reweigh_errors():
    with pytest.raises(DataError, match="group 'b' has no rows with label 1"):
        reweigh([0, 1, 0, 0], ["a", "a", "b", "b"])
    with pytest.raises(DataError, match="got 2 and 1"):
        reweigh([0, 1], ["a"])


# --- the bootstrap -------------------------------------------------------------------------------------------
def test_resample_counts():
    c = resample_counts(50, n_boot=7, seed=2)
    assert c.shape == (7, 50) and (c.sum(axis=1) == 50).all() and (c >= 0).all()
    assert np.array_equal(c, resample_counts(50, n_boot=7, seed=2))
    with pytest.raises(DataError, match="at least 1"):
        resample_counts(0)


def test_counts_equal_copied_rows():
    y, pred, g = _case(n=300, n_groups=3, seed=7)
    counts = resample_counts(len(y), n_boot=4, seed=1)
    _, r = group_rates(y, pred, g, weights=counts)
    for i in range(4):
        rows = np.repeat(np.arange(len(y)), counts[i])
        t = group_metrics(y[rows], pred[rows], g[rows])
        for k in ("n", "accuracy", "selection_rate", "tpr", "fpr"):
            np.testing.assert_allclose(r[k][i], t[k].to_numpy(), atol=1e-12)


def test_fairness_ci_shape_and_reference():
    y, pred, g = _case(n=800, n_groups=2, seed=1)
    fixed = np.where(g == "g0", (np.random.default_rng(0).random(800) < 0.45), pred).astype(int)
    t = fairness_ci(y, {"before": pred, "after": fixed}, g, n_boot=200, seed=0)
    assert list(t.columns) == ["value", "lo", "hi"]
    assert set(t.index.unique("statistic")) == {"accuracy", "dp_gap", "eo_gap", "accuracy change", "dp_gap cut", "eo_gap cut"}
    assert (t.loc["before"].loc[["accuracy change", "dp_gap cut", "eo_gap cut"]] == 0).all().all()
    assert (t.lo <= t.hi).all()
    assert t.loc[("before", "dp_gap"), "value"] == pytest.approx(demographic_parity_gap(y, pred, g))
    cut = 1 - demographic_parity_gap(y, fixed, g) / demographic_parity_gap(y, pred, g)
    assert t.loc[("after", "dp_gap cut"), "value"] == pytest.approx(cut)


def test_fairness_ci_against_scipy():
    y, pred, g = _case(n=1000, n_groups=2, seed=11)
    codes = (g == "g1").astype(int)
    ours = fairness_ci(y, {"m": pred}, codes, n_boot=2000, seed=0).loc[("m", "dp_gap")]
    theirs = bootstrap((y, pred, codes), demographic_parity_gap, paired=True, vectorized=False, n_resamples=2000,
                       method="percentile", rng=np.random.default_rng(1)).confidence_interval
    assert ours.lo == pytest.approx(theirs.low, abs=0.01) and ours.hi == pytest.approx(theirs.high, abs=0.01)


def test_fairness_ci_reference_with_zero_gap_does_not_warn():
    y = np.array([0, 1] * 50)
    g = np.array(["a"] * 50 + ["b"] * 50)
    with np.errstate(all="raise"):
        t = fairness_ci(y, {"same": np.zeros(100, int)}, g, n_boot=20)  # no gap at all: the cut is undefined
    assert np.isnan(t.loc[("same", "dp_gap cut"), "value"])


def test_plot_fairness_returns_a_figure():
    y, pred, g = _case(n=400, n_groups=2)
    t = fairness_ci(y, {"a": pred, "b": 1 - pred}, g, n_boot=50)
    fig, axes = plot_fairness(t, pyplot=False)
    assert len(axes) == 3 and [tick.get_text() for tick in axes[0].get_yticklabels()] == ["a", "b"]
    fig, axes = plot_fairness(t, statistics=("accuracy",), pyplot=False)
    assert axes.get_title(loc="left") == "Accuracy"
