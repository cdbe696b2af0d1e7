"""Tests for the one metric vocabulary (trainkit.models.METRICS): names, directions, aliases, the task check, the
metric computations against scikit-learn, and the same keys from every model's validate()."""
from __future__ import annotations

import math

import pytest
import torch
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import (accuracy_score, log_loss, mean_absolute_error, mean_squared_error,
                             precision_recall_fscore_support)

from trainkit.callbacks import Checkpoint, EarlyStopping
from trainkit.core import DataError
from trainkit.datasets import load_datasets
from trainkit.evaluate import REPORT_METRICS, check_metrics
from trainkit.learner import Learner
from trainkit.models import (ALIASES, METRICS, MLP, TRAINING_METRICS, SklearnModel, check_metric,
                             classification_metrics, goal, regression_metrics)

TASKS = ("classification", "regression")


# ------------------------------------------------------------------------------------------------ vocabulary

@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_has_a_task_a_direction_and_a_meaning(name):
    task, direction, meaning = METRICS[name]
    assert task in (*TASKS, "any") and direction in ("max", "min") and len(meaning) > 20
    assert goal(name) == direction


def test_directions_are_the_sensible_ones():
    assert [goal(m) for m in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "r2")] == ["max"] * 7
    assert [goal(m) for m in ("loss", "mae", "rmse", "ece", "valid_loss", "train_loss")] == ["min"] * 6


@pytest.mark.parametrize("alias,canon", list(ALIASES.items()))
def test_aliases_resolve_to_a_metric(alias, canon):
    assert canon in METRICS
    task = METRICS[canon][0] if METRICS[canon][0] != "any" else "classification"
    assert check_metric(alias, task) == canon and goal(alias) == goal(canon)


@pytest.mark.parametrize("metric,task,other", [("mae", "classification", "regression"),
                                               ("rmse", "classification", "regression"),
                                               ("accuracy", "regression", "classification"),
                                               ("f1", "regression", "classification")])
def test_wrong_task_names_metric_and_task(metric, task, other):
    with pytest.raises(DataError) as e:
        check_metric(metric, task)
    msg = str(e.value)
    assert repr(metric) in msg and f"{other} metric" in msg and f"{task} task" in msg


@pytest.mark.parametrize("task", TASKS)
def test_unknown_lists_the_known_ones(task):
    with pytest.raises(DataError, match="Unknown metric 'brier'") as e:
        check_metric("brier", task)
    assert all(repr(m) in str(e.value) for m in TRAINING_METRICS[task])
    with pytest.raises(DataError, match="Unknown metric 'brier'"):
        goal("brier")


@pytest.mark.parametrize("task", TASKS)
def test_training_metrics_refuse_test_time_metrics_by_name(task):
    for m in TRAINING_METRICS[task]:
        assert check_metric(m, task, among=TRAINING_METRICS[task]) == m
    late = {"classification": "auc", "regression": "r2"}[task]
    with pytest.raises(DataError, match="not computed here"):
        check_metric(late, task, among=TRAINING_METRICS[task])


def test_report_metrics_come_from_the_vocabulary():
    assert set(REPORT_METRICS["classification"]) | set(REPORT_METRICS["regression"]) == set(METRICS) - {"loss"}
    assert check_metrics(["auc", "f1_macro"], "classification") == ["roc_auc", "f1"]


def test_task_must_be_one_of_two():
    with pytest.raises(DataError, match="task='ranking'"):
        check_metric("accuracy", "ranking")


def test_callbacks_take_their_direction_from_the_vocabulary(tmp_path):
    assert EarlyStopping("accuracy").mode == "max" and EarlyStopping("valid_loss").mode == "min"
    assert EarlyStopping("rmse").mode == "min" and Checkpoint(tmp_path, monitor="f1").mode == "max"
    with pytest.raises(DataError, match="Unknown metric 'my_score'"):
        EarlyStopping("my_score")
    assert EarlyStopping("my_score", mode="max").mode == "max"  # a custom metric states its direction


# ---------------------------------------------------------------------------------------- the same keys

@pytest.mark.parametrize("name", ["penguins", "diabetes"])
def test_sklearn_model_and_learner_validate_return_the_same_keys(name):
    data = load_datasets(name)
    torch.manual_seed(0)
    learn = Learner(MLP(data.X_train.shape[1], data.n_classes or 1, (8,)), data, device="cpu").fit(2, lr=1e-2)
    est = RandomForestClassifier(20, random_state=0) if data.task == "classification" else RandomForestRegressor(20, random_state=0)
    sk = SklearnModel(est).fit(data)
    assert list(learn.validate("valid")) == list(sk.validate("valid")) == list(TRAINING_METRICS[data.task])


def test_sklearn_model_loss_is_the_cross_entropy_of_its_probabilities():
    data = load_datasets("penguins")
    sk = SklearnModel(RandomForestClassifier(50, random_state=0)).fit(data)
    v = sk.validate("valid")
    P = sk.predict(data.X_valid).numpy()
    assert v["loss"] == pytest.approx(log_loss(data.y_valid.numpy(), P.clip(1e-12), labels=[0, 1, 2]), rel=1e-5)
    assert v["accuracy"] == pytest.approx(accuracy_score(data.y_valid, P.argmax(1)))
    with pytest.raises(DataError, match="split='dev'"):
        sk.validate("dev")


# ------------------------------------------------------------------------------- computations vs sklearn

def _sk_classification(logits, target):
    pred = logits.argmax(1).numpy()
    p, r, f, _ = precision_recall_fscore_support(target.numpy(), pred, average="macro", zero_division=0)
    return {"accuracy": accuracy_score(target.numpy(), pred), "precision": p, "recall": r, "f1": f}


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    n, k = 200, 6
    logits = torch.randn(n, k, generator=g)
    logits[:, 4] = -100.0  # class 4 is never predicted (it still occurs in the targets)
    target = torch.randint(0, k, (n,), generator=g)
    target[target == 5] = 0  # class 5 never occurs in the targets (it is still predicted)
    assert (logits.argmax(1) == 5).any() and (target == 4).any()
    ours, ref = classification_metrics(logits, target), _sk_classification(logits, target)
    assert ours.keys() == ref.keys()
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


def test_classification_metrics_class_absent_everywhere_and_perfect():
    # class 3 of 4 is neither predicted nor a target: sklearn leaves it out of the macro average
    logits = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0], [5.0, 0, 0, 0], [0, 0, 5.0, 0]])
    target = torch.tensor([0, 1, 1, 0, 2])
    ours, ref = classification_metrics(logits, target), _sk_classification(logits, target)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    perfect = classification_metrics(torch.eye(3)[[0, 1, 2, 1]] * 3, torch.tensor([0, 1, 2, 1]))
    assert perfect == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}


@pytest.mark.parametrize("shape", [(50,), (50, 1)])
def test_regression_metrics_match_sklearn(shape):
    g = torch.Generator().manual_seed(3)
    target = torch.randn(50, generator=g) * 10
    pred = (target + torch.randn(50, generator=g)).reshape(shape)
    ours = regression_metrics(pred, target)
    assert ours["mae"] == pytest.approx(mean_absolute_error(target.numpy(), pred.reshape(-1).numpy()), rel=1e-6)
    assert ours["rmse"] == pytest.approx(math.sqrt(mean_squared_error(target.numpy(), pred.reshape(-1).numpy())),
                                         rel=1e-6)
