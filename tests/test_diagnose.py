"""Tests for trainkit.diagnose: the verdicts on histories written by hand and on real runs built to be each,
the evidence numbers, clear errors on bad input, and the learning-curve helpers against scikit-learn."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.model_selection import PredefinedSplit, learning_curve, validation_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures

from trainkit.core import DataError
from trainkit.datasets import Datasets, load_datasets
from trainkit.diagnose import (VERDICTS, Diagnosis, baseline_loss, diagnose, evidence, plot_learning_curve, poly_errors,
                               sweep, with_train_rows)
from trainkit.learner import Learner
from trainkit.models import MLP, SklearnModel

matplotlib.use("Agg")
LN10 = math.log(10)


def made(train, valid=None) -> list[dict]:
    "A history written by hand: one dict per epoch, as learn.history holds."
    valid = train if valid is None else valid
    return [{"epoch": i, "train_loss": t, "valid_loss": v} for i, (t, v) in enumerate(zip(train, valid))]


@pytest.fixture(scope="module")
def digits() -> Datasets:
    return load_datasets("digits")


def run(digits, width, rows=None, epochs=10, lr=1e-2, weight_decay=0.01, schedule="onecycle", batch_size=64) -> Learner:
    "The notebook's recipe: an MLP with one hidden layer, seed 0, on `rows` training digits drawn at random."
    torch.manual_seed(0)
    data = digits if rows is None else with_train_rows(digits, rows)
    learn = Learner(MLP(64, 10, hidden=(width,)), data, device="cpu", batch_size=batch_size, weight_decay=weight_decay)
    return learn.fit(epochs, lr=lr, schedule=schedule)


# --- verdicts on histories written by hand -------------------------------------------------------------------

@pytest.mark.parametrize("train, valid, verdict", [
    ([2.1, 1.9, 1.9, 1.9, 1.9], None, "underfitting"),
    ([0.9, 0.5, 0.2, 0.1, 0.0], [0.9, 0.5, 0.3, 0.4, 0.6], "overfitting"),  # turned: 100% above the best
    ([0.9, 0.3, 0.1, 0.02, 0.01], [0.9, 0.5, 0.45, 0.45, 0.45], "overfitting"),  # no turn, but a wide gap
    ([2.0, 1.5, 1.0, 0.6, 0.3], None, "not converged"),
    ([0.3, 0.1, 0.06, 0.05, 0.05], [0.3, 0.12, 0.1, 0.1, 0.1], "good fit"),
])
def test_verdicts_on_written_histories(train, valid, verdict):
    found = diagnose(made(train, valid), baseline=2.3)
    assert found.verdict == verdict, found
    assert found.verdict in VERDICTS and found.advice and found.reason
    assert str(found).startswith(f"{verdict}: ")


def test_the_rules_are_checked_in_order():
    # still falling fast AND already turned: overfitting wins (training longer would make it worse)
    turned_while_falling = made([2.0, 1.5, 1.0, 0.3, 0.2, 0.1], [2.0, 1.5, 1.0, 0.3, 0.5, 0.7])
    e = evidence(turned_while_falling, 2.3)
    assert e["drop"] > 0.02 and e["rise"] > 0.10
    assert diagnose(turned_while_falling, 2.3).verdict == "overfitting"
    # high training loss AND still falling fast: not converged wins over underfitting
    unfinished = made([2.2, 2.0, 1.8, 1.6, 1.4])
    assert evidence(unfinished, 2.3)["bias"] > 0.10
    assert diagnose(unfinished, 2.3).verdict == "not converged"


def test_evidence_numbers():
    e = evidence(made([2.0, 1.0, 0.6, 0.5, 0.4], [2.0, 1.2, 0.8, 0.9, 1.0]), baseline=2.5, target=0.5)
    assert e["epochs"] == 5 and e["best_epoch"] == 2 and e["best_valid_loss"] == 0.8
    assert math.isclose(e["bias"], (0.4 - 0.5) / 2.0)
    assert math.isclose(e["gap"], (1.0 - 0.4) / 2.0)
    assert math.isclose(e["rise"], 1.0 / 0.8 - 1)
    assert math.isclose(e["drop"], (1.2 - 1.0) / 2.0)  # window 3: from epoch 1 to epoch 4
    assert math.isclose(evidence(made([1, 1, 1, 1, 1, 0.5]), 2.0, window=1)["drop"], 0.25)


def test_thresholds_are_arguments():
    h = made([0.9, 0.5, 0.26, 0.25, 0.25, 0.25])  # flat at a training loss 11% of the baseline
    assert diagnose(h, 2.3).verdict == "underfitting"
    assert diagnose(h, 2.3, bias=0.2).verdict == "good fit"
    assert diagnose(h, 2.3, target=0.2).verdict == "good fit"  # measured from a higher floor, it is close enough
    gap = made([0.5, 0.2, 0.1, 0.1, 0.1, 0.1], [0.5, 0.3, 0.25, 0.25, 0.25, 0.25])  # gap 0.15 / 2.3 = 6.5%
    assert diagnose(gap, 2.3).verdict == "good fit"
    assert diagnose(gap, 2.3, gap=0.05).verdict == "overfitting"


def test_a_rise_just_below_and_at_the_threshold():
    assert diagnose(made([0.1] * 5, [0.5, 0.2, 0.2, 0.2, 0.219]), 2.3).verdict == "good fit"  # 9.5% above the best
    assert diagnose(made([0.1] * 5, [0.5, 0.2, 0.2, 0.2, 0.221]), 2.3).verdict == "overfitting"  # 10.5%


def test_baseline_from_datasets(digits):
    h = made([2.1, 1.9, 1.9, 1.9, 1.9])
    assert diagnose(h, digits) == diagnose(h, baseline_loss(digits))
    assert math.isclose(evidence(h, digits)["baseline"], LN10, rel_tol=1e-3)


def test_diagnosis_is_a_small_frozen_record():
    found = diagnose(made([2.0, 1.5, 1.0, 0.6, 0.3]), 2.3)
    assert isinstance(found, Diagnosis) and "evidence" not in repr(found)  # the numbers are there, not in the repr
    with pytest.raises(AttributeError):
        found.verdict = "good fit"


# --- bad input: each error names what is wrong ---------------------------------------------------------------

@pytest.mark.parametrize("history, kw, message", [
    ("not a list", {}, "history should be a list"),
    ([], {}, "0 epoch(s)"),
    (made([1.0, 0.9, 0.8]), {}, "needs at least 4"),
    (made([1.0, 0.9]), {"window": 1}, None),  # two epochs are enough for a window of one
    (made([1.0, 0.9, 0.8, 0.7]), {"window": 0}, "window=0"),
    (made([1.0, 0.9, 0.8, 0.7]), {"window": True}, "window=True"),
    ([{"train_loss": 1.0}] * 4, {}, "has no 'valid_loss'"),
    ([1.0, 0.9, 0.8, 0.7], {}, "history[0] should be a dict"),
    (made([1.0, 0.9, float("nan"), 0.7]), {}, "train_loss at epoch 2 is nan"),
    (made([1.0, 0.9, 0.8, 0.7], [1.0, 0.9, 0.8, float("inf")]), {}, "valid_loss at epoch 3 is inf"),
    (made([1.0, 0.9, 0.8, "0.7"]), {}, "train_loss at epoch 3 is '0.7'"),
    (made([1.0, 0.9, 0.8, 0.7]), {"baseline": 0.0}, "baseline=0.0 must be a number above target=0.0"),
    (made([1.0, 0.9, 0.8, 0.7]), {"baseline": 2.3, "target": 2.3}, "above target=2.3"),
    (made([1.0, 0.9, 0.8, 0.7]), {"baseline": "2.3"}, "baseline='2.3'"),
    (made([1.0, 0.9, 0.8, 0.7]), {"rise": 0}, "rise=0"),
    (made([1.0, 0.9, 0.8, 0.7]), {"gap": -0.1}, "gap=-0.1"),
    (made([1.0, 0.9, 0.8, 0.7]), {"bias": True}, "bias=True"),
])
def test_bad_input_is_named(history, kw, message):
    kw = {"baseline": 2.3, **kw}
    if message is None:
        assert diagnose(history, **kw).verdict in VERDICTS
        return
    with pytest.raises(DataError) as err:
        diagnose(history, **kw)
    assert message in str(err.value), str(err.value)


def test_numpy_numbers_are_fine():
    h = made([np.float32(2.0), np.float64(1.9), 1.9, 1.9, 1.9])
    assert diagnose(h, np.float64(2.3)).verdict == "underfitting"


# --- the baseline against scikit-learn's dummy models --------------------------------------------------------

def flat(X: torch.Tensor) -> np.ndarray:
    return X.flatten(1).numpy()


def test_baseline_loss_equals_dummy_classifier(digits):
    dummy = DummyClassifier(strategy="prior").fit(flat(digits.X_train), digits.y_train.numpy())
    expected = log_loss(digits.y_valid.numpy(), dummy.predict_proba(flat(digits.X_valid)), labels=range(10))
    assert math.isclose(baseline_loss(digits), expected, rel_tol=1e-9)


def test_baseline_loss_equals_dummy_regressor():
    data = load_datasets("diabetes")
    dummy = DummyRegressor().fit(flat(data.X_train), data.y_train.numpy())
    expected = mean_squared_error(data.y_valid.numpy(), dummy.predict(flat(data.X_valid)))
    assert math.isclose(baseline_loss(data), expected, rel_tol=1e-6)


def test_baseline_loss_with_a_class_missing_from_training(digits):
    no_zeros = with_train_rows(digits, len(digits.X_train))
    keep = no_zeros.y_train != 0
    no_zeros = Datasets(digits.X_train[keep], digits.y_train[keep], digits.X_valid, digits.y_valid, digits.X_test,
                        digits.y_test, digits.feature_names, digits.classes, kind="image")
    loss = baseline_loss(no_zeros)
    assert math.isfinite(loss) and loss > baseline_loss(digits)  # an unseen class costs -log(eps), not infinity


def test_baseline_loss_needs_datasets():
    with pytest.raises(DataError, match="baseline_loss: data should be a Datasets"):
        baseline_loss([1, 2, 3])


# --- polynomials against scikit-learn's validation_curve -----------------------------------------------------

def noisy_sine(seed=2):
    rng = np.random.default_rng(seed)
    x_train = np.linspace(-1, 1, 20)
    y_train = np.sin(3 * x_train) + 0.25 * rng.standard_normal(20)
    x_valid = rng.uniform(-1, 1, 200)
    return x_train, y_train, x_valid, np.sin(3 * x_valid) + 0.25 * rng.standard_normal(200)


def test_poly_errors_equal_validation_curve():
    x_train, y_train, x_valid, y_valid = noisy_sine()
    degrees = list(range(1, 13))
    table = poly_errors(x_train, y_train, x_valid, y_valid, degrees)
    assert list(table.columns) == ["degree", "train_loss", "valid_loss"] and table.degree.tolist() == degrees
    X, y = np.r_[x_train, x_valid][:, None], np.r_[y_train, y_valid]
    fold = PredefinedSplit(np.r_[np.full(20, -1), np.zeros(200)])
    tr, va = validation_curve(make_pipeline(PolynomialFeatures(include_bias=False), LinearRegression()), X, y,
                              param_name="polynomialfeatures__degree", param_range=degrees, cv=fold,
                              scoring="neg_mean_squared_error")
    np.testing.assert_allclose(table.train_loss, -tr[:, 0], rtol=1e-6)
    np.testing.assert_allclose(table.valid_loss, -va[:, 0], rtol=1e-6)


def test_poly_errors_show_under_and_overfitting():
    table = poly_errors(*noisy_sine()).set_index("degree")
    assert table.train_loss.is_monotonic_decreasing  # more capacity never fits the training points worse
    best = table.valid_loss.idxmin()
    assert table.valid_loss[1] > 2 * table.valid_loss[best] and table.valid_loss[15] > 10 * table.valid_loss[best]


def test_poly_errors_bad_input():
    x_train, y_train, x_valid, y_valid = noisy_sine()
    with pytest.raises(DataError, match="degree 20 needs at least 21 training points and there are 20"):
        poly_errors(x_train, y_train, x_valid, y_valid, [3, 20])
    with pytest.raises(DataError, match="x and y differ in length"):
        poly_errors(x_train, y_train[:-1], x_valid, y_valid)


# --- subsets and sizes against scikit-learn's learning_curve -------------------------------------------------

def test_with_train_rows_draws_nested_random_rows(digits):
    order = np.random.default_rng(0).permutation(len(digits.X_train))
    small = with_train_rows(digits, 30)
    assert torch.equal(small.X_train, digits.X_train[order[:30]]) and torch.equal(small.y_train, digits.y_train[order[:30]])
    assert small.X_valid is digits.X_valid and small.X_test is digits.X_test and small.classes == digits.classes
    assert small.rows("train").equals(digits.rows("train").iloc[order[:30]])  # the rows behind the tensors follow
    assert torch.equal(with_train_rows(digits, 10).X_train, small.X_train[:10])  # nested: a smaller set is inside
    assert not torch.equal(with_train_rows(digits, 30, seed=1).X_train, small.X_train)
    assert len(digits.X_train) == 1257  # the original is untouched
    assert len(with_train_rows(digits, np.int64(5)).X_train) == 5


def test_with_train_rows_bad_seed(digits):
    with pytest.raises(DataError, match="seed='1'; use a whole number, or None"):
        with_train_rows(digits, 10, seed="1")


def test_with_train_rows_seed_none_keeps_the_first_rows(digits):
    first = with_train_rows(digits, 30, seed=None)
    assert torch.equal(first.X_train, digits.X_train[:30]) and torch.equal(first.y_train, digits.y_train[:30])
    assert first.rows("train").equals(digits.rows("train").iloc[:30])


@pytest.mark.parametrize("n", [0, 1258, 2.5, True, "10"])
def test_with_train_rows_bad_n(digits, n):
    with pytest.raises(DataError, match="use a whole number from 1 to 1257"):
        with_train_rows(digits, n)


@pytest.mark.parametrize("seed", [None, 0])
def test_sizes_equal_learning_curve(digits, seed):
    "learning_curve(shuffle=False) fits on the first n rows of the training fold: in with_train_rows' order, they are ours."
    sizes = [40, 200, 1257]
    order = np.arange(len(digits.X_train)) if seed is None else np.random.default_rng(seed).permutation(len(digits.X_train))
    X = np.r_[flat(digits.X_train)[order], flat(digits.X_valid)]
    y = np.r_[digits.y_train.numpy()[order], digits.y_valid.numpy()]
    fold = PredefinedSplit(np.r_[np.full(len(digits.y_train), -1), np.zeros(len(digits.y_valid))])
    _, tr, va = learning_curve(LogisticRegression(max_iter=2000), X, y, train_sizes=sizes, cv=fold, shuffle=False,
                               scoring="accuracy")
    models = [SklearnModel(LogisticRegression(max_iter=2000)).fit(with_train_rows(digits, n, seed=seed)) for n in sizes]
    assert [m.validate("train")["accuracy"] for m in models] == list(tr[:, 0])
    assert [m.validate()["accuracy"] for m in models] == list(va[:, 0])


# --- the plot ------------------------------------------------------------------------------------------------

def test_plot_learning_curve_draws_both_losses():
    table = pd.DataFrame({"width": [1, 4, 16], "train_loss": [1.0, 0.5, 0.1], "valid_loss": [1.1, 0.6, 0.4]})
    ax = plot_learning_curve(table, "width", label="demo", logx=True)
    assert [line.get_label() for line in ax.lines] == ["demo validation", "demo training"]
    assert list(ax.lines[0].get_ydata()) == [1.1, 0.6, 0.4] and ax.lines[1].get_linestyle() == "--"
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16"]
    assert ax.get_xlabel() == "width" and ax.get_legend() is not None
    with pytest.raises(DataError, match=r"no column \['valid_loss'\]"):
        plot_learning_curve(table.drop(columns="valid_loss"), "width")


# --- real short runs built to be each ------------------------------------------------------------------------

def test_real_runs_built_to_be_each(digits):
    runs = {"underfitting": run(digits, 2),
            "overfitting": run(digits, 512, rows=100, epochs=40, weight_decay=0.0, schedule="constant", batch_size=32),
            "good fit": run(digits, 64),
            "not converged": run(digits, 64, epochs=4, lr=1e-3, schedule="constant"),
            "underfitting (over-regularised)": run(digits, 64, weight_decay=5.0)}
    for name, learn in runs.items():
        found = diagnose(learn.history, digits)
        assert found.verdict == name.split(" (")[0], f"{name}: {found}"


def test_sweep_on_real_runs(digits):
    table = sweep(lambda w: run(digits, w, rows=500, epochs=8), [2, 64], name="width", baseline=LN10)
    assert list(table.columns) == ["width", "params", "rows", "epochs", "train_loss", "valid_loss", "best_valid_loss",
                                   "accuracy", "verdict"]
    assert table.width.tolist() == [2, 64] and table.rows.tolist() == [500, 500] and table.epochs.tolist() == [8, 8]
    assert table.params.tolist() == [64 * 2 + 2 + 2 * 10 + 10, 64 * 64 + 64 + 64 * 10 + 10]
    assert table.verdict[0] == "underfitting" and table.valid_loss[1] < table.valid_loss[0]
    assert (table.best_valid_loss <= table.valid_loss).all()


def test_sweep_needs_trained_learners(digits):
    with pytest.raises(DataError, match=r"make\(3\) returned a Learner without a training history"):
        sweep(lambda w: Learner(MLP(64, 10, hidden=(w,)), digits, device="cpu"), [3])
    with pytest.raises(DataError, match=r"make\(3\) returned a int"):
        sweep(lambda w: w, [3])
