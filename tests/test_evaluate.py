"""Tests for trainkit.evaluate: sklearn oracles for every metric, the ECE oracle, the threshold logic,
JSON/Markdown/save, test-split bookkeeping, slices, and every bad input. The plots and the threshold widget
(trainkit.plots) are tested in test_plots.py."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix, f1_score, mean_absolute_error,
                             precision_recall_fscore_support, precision_score, r2_score, recall_score, roc_auc_score,
                             root_mean_squared_error)
from sklearn.preprocessing import label_binarize

from trainkit.clean import CleanSpec, clean
from trainkit.core import DataError
from trainkit.data import collect, penguins_csv
from trainkit.datasets import Datasets, load_datasets, load_penguins
from trainkit.evaluate import (REPORT_METRICS, Report, ReusedTestSetWarning, at_threshold, calibration_bins, compare,
                               evaluate, n_test_uses)
from trainkit.learner import Learner
from trainkit.models import MLP, SklearnModel
from trainkit.prep import split

# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cancer() -> Datasets:
    return load_datasets("breast_cancer")


@pytest.fixture(scope="module")
def penguins() -> Datasets:
    return load_penguins(seed=42, source=penguins_csv())  # the shipped CSV: no course database needed


@pytest.fixture(scope="module")
def penguin_splits():
    df, _ = clean(collect(penguins_csv()), CleanSpec.penguins())
    return split(df, "species", groups="individual_id", seed=42)


@pytest.fixture(scope="module")
def diabetes() -> Datasets:
    return load_datasets("diabetes")


@pytest.fixture(scope="module")
def logreg(cancer):
    return SklearnModel(LogisticRegression(C=0.1, max_iter=1000)).fit(cancer)


@pytest.fixture(scope="module")
def forest(penguins):
    return SklearnModel(RandomForestClassifier(30, max_depth=2, random_state=0)).fit(penguins)


@pytest.fixture(scope="module")
def ridge(diabetes):
    return SklearnModel(Ridge(alpha=1.0)).fit(diabetes)


def fresh(data: Datasets) -> Datasets:
    "A copy with its own test-use count."
    return data.to("cpu")


def all_plain(x) -> bool:
    "True when x is built only from dict (str keys), list, str, int, float, bool and None."
    if isinstance(x, dict):
        return all(type(k) is str and all_plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(all_plain(v) for v in x)
    return x is None or type(x) in (str, int, float, bool)


class Fixed:
    "A 'model' that returns given outputs: for checking evaluate's input checks."
    def __init__(self, out): self.out = out
    def predict(self, X): return self.out


# ------------------------------------------------------------------------------------------------ metric oracles


def test_binary_metrics_match_sklearn(cancer, logreg):
    r = evaluate(logreg, cancer, "valid")
    y, p1 = cancer.y_valid.numpy(), logreg.predict(cancer.X_valid)[:, 1].numpy().astype(np.float64)
    pred = logreg.predict(cancer.X_valid).numpy().argmax(1)
    m = r.metrics
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    for avg in ("macro", "weighted"):
        p, rc, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        sfx = "" if avg == "macro" else "_weighted"  # macro averages are the vocabulary's plain precision, recall, f1
        assert (m[f"precision{sfx}"], m[f"recall{sfx}"], m[f"f1{sfx}"]) == pytest.approx((p, rc, f), abs=1e-12)
    p, rc, f, s = precision_recall_fscore_support(y, pred, zero_division=0)
    for i, c in enumerate(cancer.classes):
        assert r.per_class[c] == pytest.approx({"precision": p[i], "recall": rc[i], "f1": f[i], "support": s[i]}, abs=1e-12)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p1), abs=1e-12)
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p1), abs=1e-12)
    assert r.confusion == confusion_matrix(y, pred).tolist()
    assert set(m) == set(REPORT_METRICS["classification"])
    assert r.metric("auc") == m["roc_auc"] and r.metric("f1_macro") == m["f1"]


def test_multiclass_metrics_match_sklearn(penguins, forest):
    r = evaluate(forest, penguins, "valid")
    y, P = penguins.y_valid.numpy(), forest.predict(penguins.X_valid).numpy().astype(np.float64)
    pred = P.argmax(1)
    assert r.metrics["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    for avg in ("macro", "weighted"):
        p, rc, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        sfx = "" if avg == "macro" else "_weighted"
        assert (r.metrics[f"precision{sfx}"], r.metrics[f"recall{sfx}"], r.metrics[f"f1{sfx}"]) == pytest.approx((p, rc, f), abs=1e-12)
    assert r.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr", average="macro"), abs=1e-12)
    assert r.metrics["average_precision"] == pytest.approx(
        average_precision_score(label_binarize(y, classes=[0, 1, 2]), P, average="macro"), abs=1e-12)
    p, rc, f, s = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    assert [r.per_class[c]["recall"] for c in penguins.classes] == pytest.approx(rc.tolist(), abs=1e-12)
    assert [r.per_class[c]["support"] for c in penguins.classes] == s.tolist()
    assert r.confusion == confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()


def test_threshold_sets_binary_decisions(cancer, logreg):
    r = evaluate(logreg, cancer, "valid", threshold=0.3)
    y, p1 = cancer.y_valid.numpy(), logreg.predict(cancer.X_valid)[:, 1].numpy()
    pred = (p1 >= 0.3).astype(int)
    assert r.threshold == 0.3
    assert r.metrics["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert r.metrics["recall"] == pytest.approx(recall_score(y, pred, average="macro"), abs=1e-12)
    assert r.confusion == confusion_matrix(y, pred).tolist()
    assert r.metrics["roc_auc"] == evaluate(logreg, cancer, "valid").metrics["roc_auc"]  # threshold-free


def test_regression_metrics_match_sklearn(diabetes, ridge):
    r = evaluate(ridge, diabetes, "valid")
    y, pred = diabetes.y_valid.numpy().astype(np.float64), ridge.predict(diabetes.X_valid).numpy().astype(np.float64)
    assert set(r.metrics) == set(REPORT_METRICS["regression"])
    assert r.metrics["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert r.metrics["rmse"] == pytest.approx(root_mean_squared_error(y, pred), rel=1e-12)
    assert r.metrics["r2"] == pytest.approx(r2_score(y, pred), rel=1e-12)
    assert r.classes is None and r.per_class == {} and r.confusion == []


def test_evaluate_takes_a_learner(cancer):
    torch.manual_seed(0)
    learn = Learner(MLP(30, 2, (16,)), cancer, device="cpu").fit(2, lr=1e-2)
    r = evaluate(learn, cancer, "valid")
    assert r.model == "MLP"
    np.testing.assert_allclose(r.scores, learn.predict(cancer.X_valid).numpy(), rtol=0, atol=0)
    assert r.metrics["accuracy"] == pytest.approx(learn.validate()["accuracy"], abs=1e-9)


# ------------------------------------------------------------------------------------------------ calibration


@pytest.mark.parametrize("kind", ["continuous", "tenths", "twentieths"])
def test_ece_matches_calibration_curve(kind):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=2000)
    if kind == "tenths":  # values on the bin edges (as a 10-tree forest gives): the edge convention must match
        p = rng.integers(0, 11, size=2000) / 10
    elif kind == "twentieths":
        p = rng.integers(0, 21, size=2000) / 20
    y = (rng.uniform(size=p.size) < p ** 1.5).astype(int)  # miscalibrated on purpose
    cal = calibration_bins(y, p, n_bins=10)
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(cal["frequency"], frac_pos, atol=1e-12)
    np.testing.assert_allclose(cal["confidence"], mean_pred, atol=1e-12)
    assert sum(cal["count"]) == len(p)
    # ECE from the oracle's bins, weighted by a plain-Python count of each bin's members
    edges = np.linspace(0, 1, 11)
    members = [[i for i, v in enumerate(p) if (edges[b] < v <= edges[b + 1]) or (b == 0 and v == 0)] for b in range(10)]
    counts = [len(m) for m in members if m]
    assert counts == cal["count"]
    oracle = sum(n / len(p) * abs(f - c) for n, f, c in zip(counts, frac_pos, mean_pred))
    assert cal["ece"] == pytest.approx(oracle, abs=1e-12)
    assert cal["ece"] > 0.02  # the miscalibration shows


def test_ece_multiclass_is_top_label(penguins, forest):
    r = evaluate(forest, penguins, "valid")
    y, P = penguins.y_valid.numpy(), forest.predict(penguins.X_valid).numpy().astype(np.float64)
    correct, conf = (P.argmax(1) == y).astype(int), P.max(1)
    frac, mean_pred = calibration_curve(correct, conf, n_bins=10)
    np.testing.assert_allclose(r.calibration["frequency"], frac, atol=1e-12)
    np.testing.assert_allclose(r.calibration["confidence"], mean_pred, atol=1e-12)
    expected = sum(n / len(y) * abs(f - c) for n, f, c in zip(r.calibration["count"], frac, mean_pred))
    assert r.metrics["ece"] == pytest.approx(expected, abs=1e-12)


def test_perfectly_calibrated_scores_have_small_ece():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=50_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert calibration_bins(y, p)["ece"] < 0.01


# ------------------------------------------------------------------------------------------------ threshold


@pytest.mark.parametrize("t", [0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0, 1.01])
def test_at_threshold_matches_sklearn(t):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).round(2)  # ties at the thresholds too
    r = at_threshold(y, p1, t)
    pred = (p1 >= t).astype(int)
    assert r["confusion"] == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert r["precision"] == pytest.approx(precision_score(y, pred, zero_division=0), abs=1e-12)
    assert r["recall"] == pytest.approx(recall_score(y, pred, zero_division=0), abs=1e-12)
    assert r["f1"] == pytest.approx(f1_score(y, pred, zero_division=0), abs=1e-12)
    assert all_plain(r)


def test_report_at_threshold(cancer, logreg, penguins, forest, diabetes, ridge):
    r = evaluate(logreg, cancer, "valid")
    for t in (0.2, 0.5, 0.8):
        assert r.at_threshold(t) == at_threshold(r.y_true, r.scores[:, 1], t)
    back = Report.from_json(json.loads(json.dumps(r.to_json())))  # a report read back from JSON counts the same
    assert back.at_threshold(0.3) == r.at_threshold(0.3)
    with pytest.raises(DataError, match="binary classification report; this one is classification with 3 classes"):
        evaluate(forest, penguins, "valid").at_threshold(0.5)
    with pytest.raises(DataError, match="binary classification report; this one is regression"):
        evaluate(ridge, diabetes, "valid").at_threshold(0.5)


# ------------------------------------------------------------------------------------------------ report formats


@pytest.mark.parametrize("which", ["binary", "multiclass", "regression"])
def test_json_round_trip_plain_types(which, cancer, logreg, penguins, forest, penguin_splits, diabetes, ridge):
    r = {"binary": lambda: evaluate(logreg, cancer, "valid", threshold=0.4),
         "multiclass": lambda: evaluate(forest, penguins, "valid", group=penguin_splits.valid["island"]),
         "regression": lambda: evaluate(ridge, diabetes, "valid", group=np.arange(66) % 3)}[which]()
    d = r.to_json()
    assert all_plain(d)
    text = json.dumps(d, allow_nan=False)  # strict JSON: no NaN either
    back = Report.from_json(json.loads(text))
    assert back.to_json() == d
    assert back.to_markdown() == r.to_markdown()
    with pytest.raises(DataError, match="Not a trainkit report"):
        Report.from_json({**d, "format": "something else"})


def test_undefined_metric_is_none_not_nan(cancer):
    one_class = fresh(cancer)
    keep = one_class.y_valid == 0
    one_class.X_valid, one_class.y_valid = one_class.X_valid[keep], one_class.y_valid[keep]
    rng = np.random.default_rng(0)
    p1 = rng.uniform(size=int(keep.sum()))
    r = evaluate(Fixed(np.stack([1 - p1, p1], 1)), one_class, "valid")
    assert r.metrics["roc_auc"] is None and r.metrics["average_precision"] is None
    json.dumps(r.to_json(), allow_nan=False)
    assert "–" in r.to_markdown()


def test_markdown_and_html(penguins, forest, penguin_splits):
    r = evaluate(forest, penguins, "valid", group=penguin_splits.valid["island"], name="forest")
    md = r.to_markdown()
    assert md.startswith("### forest on penguins, valid split")
    for part in ("**metrics**", "**per class**", "**confusion", "**slices**", "| Adelie |", "| Dream |"):
        assert part in md
    html = r._repr_html_()
    assert "<table" in html and "Chinstrap" in html and "Biscoe" in html
    assert r._repr_markdown_() == md


def test_save_writes_files(tmp_path, files_in, cancer, logreg, diabetes, ridge):
    r = evaluate(logreg, cancer, "valid")
    out = r.save(tmp_path / "cancer")
    assert files_in(out) == ["confusion.png", "pr.png", "reliability.png", "report.json", "report.md", "roc.png"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert Report.from_json(json.loads((out / "report.json").read_text())).to_json() == r.to_json()
    md = (out / "report.md").read_text()
    assert md.startswith(r.to_markdown())  # the tables, then the plots beside them
    assert all(f"![{name}]({name}.png)" in md for name in ("confusion", "roc", "pr", "reliability"))
    r.save(out)  # again, over the old files: replaced, no temporary files left
    assert files_in(out) == ["confusion.png", "pr.png", "reliability.png", "report.json", "report.md", "roc.png"]
    reg = evaluate(ridge, diabetes, "valid").save(tmp_path / "diabetes")
    assert files_in(reg) == ["report.json", "report.md", "residuals.png"]


def test_compare_stacks_reports(cancer, logreg):
    other = SklearnModel(RandomForestClassifier(20, random_state=0)).fit(cancer)
    t = compare([evaluate(logreg, cancer, "valid", name="logistic"), evaluate(other, cancer, "valid", name="forest")],
                metrics=["accuracy", "auc"])
    assert list(t.index) == ["logistic", "forest"] and list(t.columns) == ["data", "split", "n", "accuracy", "roc_auc"]


# ------------------------------------------------------------------------------------------------ test-split discipline


def test_test_split_warns_on_second_use_only(cancer, logreg):
    data = fresh(cancer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the first uses
        evaluate(logreg, data, "valid")
        evaluate(logreg, data, "valid")
        evaluate(logreg, data, "test")
    assert n_test_uses(data) == 1
    with pytest.warns(ReusedTestSetWarning, match="evaluated 2 times"):
        evaluate(logreg, data, "test")
    assert n_test_uses(data) == 2
    other = fresh(cancer)  # another Datasets object: its own count
    assert n_test_uses(other) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(logreg, other, "test")


def test_failed_evaluation_is_not_counted(cancer):
    data = fresh(cancer)
    with pytest.raises(DataError):
        evaluate(Fixed(np.zeros((3, 2))), data, "test")
    assert n_test_uses(data) == 0


def test_count_goes_with_the_object(cancer, logreg):
    import gc
    data = fresh(cancer)
    evaluate(logreg, data, "test")
    key = id(data)
    from trainkit import evaluate as ev
    assert ev._TEST_USES[key] == 1
    del data
    gc.collect()
    assert key not in ev._TEST_USES


# ------------------------------------------------------------------------------------------------ slices


def test_slices_by_island(penguins, forest, penguin_splits):
    islands = penguin_splits.valid["island"]
    assert [penguins.classes[i] for i in penguins.y_valid] == list(penguin_splits.valid.species)
    r = evaluate(forest, penguins, "valid", group=islands)
    assert set(r.slices) == set(islands)
    y, pred = r.y_true, r.scores.argmax(1)
    for island, s in r.slices.items():
        rows = (islands == island).to_numpy()
        assert s["n"] == rows.sum()
        assert s["accuracy"] == pytest.approx(accuracy_score(y[rows], pred[rows]), abs=1e-12)
        assert s["f1"] == pytest.approx(f1_score(y[rows], pred[rows], average="macro", zero_division=0), abs=1e-12)
    # a Series is read by position, not by its index
    shuffled_index = islands.set_axis(islands.index[::-1])
    assert evaluate(forest, penguins, "valid", group=shuffled_index).slices == r.slices


def test_slices_regression(diabetes, ridge):
    group = np.where(diabetes.X_valid[:, 1].numpy() > 0, "b", "a")
    r = evaluate(ridge, diabetes, "valid", group=group)
    for g, s in r.slices.items():
        rows = group == g
        assert s["mae"] == pytest.approx(mean_absolute_error(r.y_true[rows], r.scores[rows]), rel=1e-12)
        assert s["rmse"] == pytest.approx(root_mean_squared_error(r.y_true[rows], r.scores[rows]), rel=1e-12)
    assert sum(s["n"] for s in r.slices.values()) == len(group)


# ------------------------------------------------------------------------------------------------ bad input


def test_regression_metric_on_classification_report(cancer, logreg):
    r = evaluate(logreg, cancer, "valid")
    for call in (lambda: r.table(metrics=["mae"]), lambda: r.metric("rmse"), lambda: compare([r], ["r2"])):
        with pytest.raises(DataError, match=r"is a regression metric, but this is a classification task"):
            call()


def test_classification_metric_on_regression_report(diabetes, ridge):
    r = evaluate(ridge, diabetes, "valid")
    with pytest.raises(DataError, match=r"'auc' is a classification metric, but this is a regression task"):
        r.metric("auc")
    with pytest.raises(DataError, match="accuracy"):
        r.table(metrics=["accuracy"])


def test_unknown_metric_lists_known(cancer, logreg):
    r = evaluate(logreg, cancer, "valid")
    with pytest.raises(DataError, match="Unknown metric 'brier'") as e:
        r.metric("brier")
    assert all(repr(m) in str(e.value) for m in REPORT_METRICS["classification"])


def test_group_of_wrong_length(penguins, forest, penguin_splits):
    with pytest.raises(DataError, match=r"group has 47 values but the valid split has 51 rows"):
        evaluate(forest, penguins, "valid", group=penguin_splits.test["island"])
    with pytest.raises(DataError, match="group has"):
        evaluate(forest, penguins, "valid", group=np.zeros((51, 2)))


def test_empty_split(cancer, logreg):
    data = fresh(cancer)
    data.X_test, data.y_test = data.X_test[:0], data.y_test[:0]
    with pytest.raises(DataError, match="test split of breast_cancer is empty"):
        evaluate(logreg, data)
    assert n_test_uses(data) == 0


@pytest.mark.parametrize("bad, msg", [
    (dict(split="holdout"), "use 'train', 'valid' or 'test'"),
    (dict(threshold=1.5), "only for binary"),
])
def test_bad_arguments(cancer, logreg, bad, msg):
    with pytest.raises(DataError, match=msg):
        evaluate(logreg, cancer, **{"split": "valid", **bad})


def test_threshold_needs_a_binary_classifier(penguins, forest, diabetes, ridge):
    for model, data in ((forest, penguins), (ridge, diabetes)):
        with pytest.raises(DataError, match="only for binary"):
            evaluate(model, data, "valid", threshold=0.5)


def test_bad_predictions(cancer, diabetes):
    n = len(cancer.y_valid)
    logits = np.random.default_rng(0).normal(size=(n, 2)) * 3
    with pytest.raises(DataError, match="not logits"):
        evaluate(Fixed(logits), cancer, "valid")
    with pytest.raises(DataError, match=r"rows of 2 class probabilities"):
        evaluate(Fixed(np.full((n, 3), 1 / 3)), cancer, "valid")
    with pytest.raises(DataError, match="one value per row"):
        evaluate(Fixed(np.zeros((len(diabetes.y_valid), 2))), diabetes, "valid")
    with pytest.raises(DataError, match="has no predict"):
        evaluate(torch.nn.Linear(30, 2), cancer, "valid")
    p1 = np.linspace(0, 1, n)  # p(positive) alone is accepted for a binary task
    assert evaluate(Fixed(p1), cancer, "valid").scores[:, 1].tolist() == p1.tolist()


def test_compare_needs_one_task(penguins, forest, diabetes, ridge):
    reg, multi = evaluate(ridge, diabetes, "valid"), evaluate(forest, penguins, "valid")
    with pytest.raises(DataError, match="different tasks"):
        compare([reg, multi])
