"""Tests for trainkit.automl: the leaderboard's shape, the budget, the halving schedule, the errors bad input gives,
and an oracle check against FLAML on a small data set. A few seconds of search each; CPU only."""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from flaml import AutoML
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from trainkit.automl import COLUMNS, FAMILIES, AutoMLResult, FamilySearch, automl, make_model, run_trial, score
from trainkit.core import DataError


def splits(loader, seed=0):
    "Train/valid/test arrays of a scikit-learn data set, scaled on the training rows."
    X, y = loader(return_X_y=True)
    stratify = y if loader is load_breast_cancer else None
    X_a, X_test, y_a, y_test = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=stratify)
    X_train, X_valid, y_train, y_valid = train_test_split(
        X_a, y_a, test_size=0.25, random_state=seed, stratify=y_a if stratify is not None else None)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), y_train, scaler.transform(X_valid), y_valid, scaler.transform(X_test), y_test


@pytest.fixture(scope="module")
def cancer():
    return splits(load_breast_cancer)


@pytest.fixture(scope="module")
def searched(cancer):
    X_train, y_train, X_valid, y_valid, _, _ = cancer
    return automl(X_train, y_train, X_valid, y_valid, task="classification", budget_s=2.0, seed=0)


# ------------------------------------------------------------------------------------ the result

def test_leaderboard_columns_order_and_best(searched, cancer):
    board = searched.leaderboard
    assert list(board.columns) == COLUMNS
    assert board.score.is_monotonic_decreasing
    assert searched.best == board.iloc[0].to_dict()
    assert set(board.family) <= set(FAMILIES)
    assert all(isinstance(p, dict) for p in board.params)
    assert (board.fit_s > 0).all() and (board.predict_s > 0).all()
    assert sorted(board.trial) == list(range(len(board)))
    _, _, X_valid, y_valid, _, _ = cancer
    assert score(searched.model, X_valid, y_valid, "classification") == pytest.approx(searched.best["score"])
    assert searched.metric == "accuracy"


def test_round_zero_is_every_familys_defaults(searched, cancer):
    first = searched.leaderboard.sort_values("trial").head(len(FAMILIES))
    assert list(first.family) == list(FAMILIES) and all(p == {} for p in first.params)
    X_train, y_train, X_valid, y_valid, _, _ = cancer
    row, _ = run_trial("linear", "classification", {}, (X_train, y_train, X_valid, y_valid), seed=0)
    assert first.score.iloc[0] == pytest.approx(row["score"])


def test_to_csv_writes_the_leaderboard_atomically(searched, tmp_path):
    path = tmp_path / "runs" / "leaderboard.csv"
    searched.to_csv(path)
    back = pd.read_csv(path)
    assert list(back.columns) == COLUMNS and len(back) == len(searched.leaderboard)
    assert back.score.tolist() == pytest.approx(searched.leaderboard.score.tolist())
    assert [p.name for p in path.parent.iterdir()] == ["leaderboard.csv"]  # no temporary file left behind


def test_regression_scores_r2():
    X_train, y_train, X_valid, y_valid, _, _ = splits(load_diabetes)
    result = automl(X_train, y_train, X_valid, y_valid, task="regression", budget_s=1.5, families=("linear", "boosted"))
    assert result.metric == "r2" and set(result.leaderboard.family) <= {"linear", "boosted"}
    assert result.best["score"] == pytest.approx(r2_score(y_valid, result.model.predict(X_valid)))


def test_make_model_keeps_scikit_learns_defaults():
    for family in FAMILIES:
        for task in ("classification", "regression"):
            model = make_model(family, task, seed=5)
            fresh = type(model)().get_params()
            got = model.get_params()
            assert {k: v for k, v in got.items() if k != "random_state"} == \
                   {k: v for k, v in fresh.items() if k != "random_state"}, (family, task)
            assert got.get("random_state", 5) == 5


# ------------------------------------------------------------------------------------ the budget

@pytest.mark.parametrize("budget_s", [0.01, 1.0])
def test_budget_honoured(cancer, budget_s):
    X_train, y_train, X_valid, y_valid, _, _ = cancer
    start = time.perf_counter()
    result = automl(X_train, y_train, X_valid, y_valid, task="classification", budget_s=budget_s, seed=1)
    wall = time.perf_counter() - start
    board = result.leaderboard
    assert len(board) >= 1  # the first trial always starts
    assert (board.started_s < budget_s).all(), "a trial started after the budget was spent"
    slowest = (board.fit_s + board.predict_s).max()
    assert result.elapsed_s <= budget_s + slowest + 0.5  # the overshoot is the last trial, not more
    assert result.overshoot_s == pytest.approx(max(0.0, result.elapsed_s - budget_s))
    assert wall >= result.elapsed_s


def fake(score, seconds=0.1):
    return {"score": score, "fit_s": seconds, "predict_s": 0.0}


def test_halving_schedule():
    made_up = {"linear": 0.7, "forest": 0.6, "boosted": 0.8, "mlp": 0.75}
    search, order = FamilySearch(FAMILIES, "classification", patience=100), []
    for k in range(4 + 12 + 12 + 12):
        family, trial, params = search.next_trial(60)
        assert (trial is None) == (k < 4) and (params == {}) == (k < 4)
        search.record(family, trial, fake(made_up[family] + k * 1e-4))
        order.append(family)
    assert order[:4] == list(FAMILIES)
    assert sorted(order[4:16]) == sorted(FAMILIES * 3)
    assert set(order[16:28]) == {"boosted", "mlp"} and set(order[28:]) == {"boosted"}


def test_a_family_that_stops_improving_steps_aside():
    search = FamilySearch(("linear", "boosted"), "classification", patience=2)
    for k in range(2 + 6):  # the linear family never improves on its default; the boosted trees keep improving
        family, trial, _ = search.next_trial(60)
        search.record(family, trial, fake(0.9 if family == "linear" else 0.5 + k / 100))
    assert search.since_best["linear"] >= 2 and search.since_best["boosted"] == 0
    assert search.next_trial(60)[0] == "boosted"  # the leader stepped aside


def test_when_every_family_is_stuck_the_best_goes_on():
    search = FamilySearch(("linear", "boosted"), "classification", patience=2)
    for _ in range(2 + 6):
        family, trial, _ = search.next_trial(60)
        search.record(family, trial, fake(0.9 if family == "linear" else 0.5))
    assert search.next_trial(60)[0] == "linear"


def test_no_trial_starts_that_cannot_finish():
    search = FamilySearch(("mlp",), "regression")
    family, trial, _ = search.next_trial(10)
    search.record(family, trial, fake(0.1, seconds=5.0))
    assert search.next_trial(4.9) is None
    assert search.next_trial(5.0)[0] == "mlp"


# ------------------------------------------------------------------------------------ bad input

def good(cancer):
    X_train, y_train, X_valid, y_valid, _, _ = cancer
    return dict(X_train=X_train, y_train=y_train, X_valid=X_valid, y_valid=y_valid, task="classification", budget_s=1)


@pytest.mark.parametrize("change, words", [
    (dict(task="clustering"), "task='clustering'"),
    (dict(budget_s=0), "budget_s=0"),
    (dict(budget_s=-3.0), "budget_s=-3.0"),
    (dict(budget_s=math.nan), "budget_s=nan"),
    (dict(budget_s=True), "budget_s=True"),
    (dict(budget_s="60"), "budget_s='60'"),
    (dict(families=()), "families=()"),
    (dict(families=("linear", "svm")), "families="),
    (dict(families="linear"), "families='linear'"),
])
def test_bad_arguments_name_the_argument(cancer, change, words):
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        automl(**{**good(cancer), **change})


def test_bad_arrays_name_the_array(cancer):
    kw = good(cancer)
    X, y = kw["X_train"], kw["y_train"]
    cases = [
        (dict(X_train=X[:, 0]), "X_train should be a 2-D array"),
        (dict(X_train=np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X)), "X_train has 1 NaN"),
        (dict(X_valid=np.full(kw["X_valid"].shape, "a", dtype=object)), "X_valid is not numeric"),
        (dict(y_train=y[:-1]), "y_train should be 1-D with one target per row"),
        (dict(y_train=y.astype(float) + 0.5), "y_train should hold class ids"),
        (dict(y_train=np.zeros_like(y)), "single class"),
        (dict(X_valid=kw["X_valid"][:, :5]), "X_train has 30 columns but X_valid 5"),
        (dict(task="regression", y_valid=np.array(["x"] * len(kw["y_valid"]))), "y_valid should hold finite numbers"),
    ]
    for change, words in cases:
        with pytest.raises(DataError, match=words):
            automl(**{**kw, **change})


# ------------------------------------------------------------------------------------ the oracle

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # FLAML's SGD learner, cut short by the budget
def test_flaml_oracle_same_budget_same_rows():
    "Our search and FLAML's, same rows, metric, budget and one thread: the test accuracies agree within 3 points."
    X_train, y_train, X_valid, y_valid, X_test, y_test = splits(load_breast_cancer, seed=0)
    ours = automl(X_train, y_train, X_valid, y_valid, task="classification", budget_s=3.0, seed=0)
    theirs = AutoML()
    with threadpool_limits(1):
        theirs.fit(X_train, y_train, X_val=X_valid, y_val=y_valid, task="classification", metric="accuracy",
                   eval_method="holdout", time_budget=3, retrain_full=False, n_jobs=1, seed=0, verbose=0)
    ours_test = accuracy_score(y_test, ours.model.predict(X_test))
    theirs_test = accuracy_score(y_test, theirs.predict(X_test))
    assert ours_test >= theirs_test - 0.03, (ours_test, theirs_test)
    assert ours.best["score"] >= (1 - theirs.best_loss) - 0.03  # validation: the search's own objective
    defaults = [accuracy_score(y_test, run_trial(f, "classification", {}, (X_train, y_train, X_valid, y_valid))[1]
                               .predict(X_test)) for f in FAMILIES]
    assert ours_test >= min(defaults)
