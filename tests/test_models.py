"""Tests for trainkit.models: linear oracles against scikit-learn, shapes, the scikit-learn wrapper, the copy task."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from torch import nn

from trainkit.core import DataError
from trainkit.datasets import Datasets, load_datasets
from trainkit.models import (CNN, MLP, TRAINING_METRICS, GRUForecaster, LinearModel, SklearnModel, TransformerClassifier, count_params,
                             fit_lbfgs, make_copy_task, time_per_step)


@pytest.fixture(scope="module")
def diabetes() -> Datasets:
    return load_datasets("diabetes")


@pytest.fixture(scope="module")
def cancer() -> Datasets:
    return load_datasets("breast_cancer")


# --------------------------------------------------------------------------------------- linear oracles

def test_linear_regression_matches_sklearn(diabetes):
    torch.manual_seed(0)
    lin = fit_lbfgs(LinearModel(diabetes.X_train.shape[1]), diabetes.X_train, diabetes.y_train)
    sk = LinearRegression().fit(diabetes.X_train.numpy(), diabetes.y_train.numpy())
    assert lin.linear.weight.dtype == torch.float32  # handed back in float32
    np.testing.assert_allclose(lin.linear.weight.detach().numpy()[0], sk.coef_, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(float(lin.linear.bias.detach()), sk.intercept_, rtol=1e-4)
    with torch.no_grad():
        pred = lin(diabetes.X_test)
    assert pred.shape == (len(diabetes.X_test),)
    np.testing.assert_allclose(pred.numpy(), sk.predict(diabetes.X_test.numpy()), rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("C", [1.0, 0.1])
def test_logistic_regression_matches_sklearn(cancer, C):
    torch.manual_seed(0)
    n = len(cancer.X_train)
    # scikit-learn minimises C*sum(loss) + |w|^2/2; the two-output softmax splits w into +-w/2: l2 = 2/(C*n)
    logit = fit_lbfgs(LinearModel(cancer.X_train.shape[1], 2), cancer.X_train, cancer.y_train, l2=2 / (C * n))
    sk = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(cancer.X_train.numpy(), cancer.y_train.numpy())
    with torch.no_grad():
        probs = logit(cancer.X_test).softmax(1).numpy()
    np.testing.assert_allclose(probs, sk.predict_proba(cancer.X_test.numpy()), atol=2e-3)
    w = logit.linear.weight.detach().double()
    np.testing.assert_allclose((w[1] - w[0]).numpy(), sk.coef_[0], rtol=1e-2, atol=1e-2)


def test_linear_model_shapes():
    x = torch.randn(5, 2, 3)
    assert LinearModel(6)(x).shape == (5,)
    assert LinearModel(6, 4)(x).shape == (5, 4)


# ------------------------------------------------------------------------------------------------ shapes

@pytest.mark.parametrize("model, x, shape", [
    (MLP(64, 10), torch.rand(7, 1, 8, 8), (7, 10)),
    (MLP(10, 1), torch.rand(7, 10), (7,)),
    (MLP(14, 3, hidden=(32,), dropout=0.2), torch.rand(7, 14), (7, 3)),
    (MLP(5, 2, hidden=()), torch.rand(7, 5), (7, 2)),
    (CNN(), torch.rand(7, 1, 8, 8), (7, 10)),
    (CNN(n_classes=3, channels=(4, 8), in_channels=3, size=16), torch.rand(7, 3, 16, 16), (7, 3)),
    (GRUForecaster(), torch.rand(7, 24, 1), (7,)),
    (GRUForecaster(n_in=3, hidden=8, layers=2), torch.rand(7, 5, 3), (7,)),
    (TransformerClassifier(vocab=16, n_classes=2, max_len=12), torch.randint(0, 16, (7, 12)), (7, 2)),
    (TransformerClassifier(vocab=16, n_classes=5, max_len=64, d_model=16, nhead=2, layers=1),
     torch.randint(0, 16, (7, 9)).float(), (7, 5)),
], ids=["mlp-digits", "mlp-regression", "mlp-dropout", "mlp-no-hidden", "cnn-digits", "cnn-rgb16", "gru",
        "gru-2layer", "transformer", "transformer-float-tokens"])
def test_output_shapes(model, x, shape):
    model.eval()
    with torch.no_grad():
        assert model(x).shape == shape


def test_mlp_layers():
    m = MLP(14, 3, hidden=(32, 16), dropout=0.2)
    kinds = [type(layer).__name__ for layer in m.net]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert not any(isinstance(layer, nn.Dropout) for layer in MLP(14, 3).net)


def test_transformer_first_position_sees_the_rest():
    "The head reads position 0, which attends to all others: changing the last token changes the output."
    torch.manual_seed(0)
    m = TransformerClassifier(vocab=16, n_classes=2, max_len=12).eval()
    x = torch.randint(0, 16, (1, 12))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 16
    with torch.no_grad():
        assert not torch.equal(m(x), m(y))


# ------------------------------------------------------------------------------------------ SklearnModel

def test_sklearn_model_random_forest_penguins():
    penguins = load_datasets("penguins")
    m = SklearnModel(RandomForestClassifier(100, random_state=0)).fit(penguins)
    probs = m.predict(penguins.X_valid)
    assert probs.shape == (len(penguins.X_valid), 3) and probs.dtype == torch.float32
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))
    v = m.validate("valid")
    assert list(v) == list(TRAINING_METRICS["classification"]) and v["accuracy"] > 0.9  # the Learner's keys
    assert v["accuracy"] == pytest.approx(float((probs.argmax(1) == penguins.y_valid).float().mean()))
    assert m.validate("test")["accuracy"] > 0.9


def test_sklearn_model_regression(diabetes):
    m = SklearnModel(RandomForestRegressor(20, random_state=0)).fit(diabetes)
    pred = m.predict(diabetes.X_valid)
    assert pred.shape == (len(diabetes.X_valid),)
    v = m.validate()
    assert list(v) == list(TRAINING_METRICS["regression"])
    assert v["rmse"] >= v["mae"] and v["loss"] == pytest.approx(v["rmse"] ** 2, rel=1e-5)
    assert v["mae"] == pytest.approx(float((pred - diabetes.y_valid).abs().mean()), rel=1e-6)


# --------------------------------------------------------------------------------------------- copy task

@pytest.mark.parametrize("n, length, vocab, seed", [(4000, 12, 16, 0), (1000, 12, 16, 1), (600, 2, 3, 2),
                                                    (500, 30, 4, 3)])
def test_copy_task(n, length, vocab, seed):
    d = make_copy_task(n=n, length=length, vocab=vocab, seed=seed)
    assert d.classes == ["unique", "repeats"] and d.kind == "tokens" and d.task == "classification"
    X = torch.cat([d.X_train, d.X_valid, d.X_test])
    y = torch.cat([d.y_train, d.y_valid, d.y_test])
    assert X.shape == (n, length) and y.shape == (n,) and y.dtype == torch.int64
    assert len(d.X_train) == int(n * 0.7) and len(d.X_valid) == int(n * 0.85) - int(n * 0.7)
    assert int(X.min()) >= 0 and int(X.max()) < vocab
    # labels are right: 'repeats' exactly when the first token occurs again later
    expected = torch.tensor([int(row[0].item() in row[1:].tolist()) for row in X])
    assert torch.equal(y, expected)
    assert 0.4 <= float(y.float().mean()) <= 0.6  # balanced
    assert 0.35 <= float(d.y_train.float().mean()) <= 0.65
    again = make_copy_task(n=n, length=length, vocab=vocab, seed=seed)
    assert torch.equal(again.X_train, d.X_train) and torch.equal(again.y_test, d.y_test)  # deterministic
    other = make_copy_task(n=n, length=length, vocab=vocab, seed=seed + 100)
    assert not torch.equal(other.X_train, d.X_train)


def test_copy_task_does_not_touch_global_rng():
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    make_copy_task(n=100)
    assert torch.equal(torch.rand(3), a)


@pytest.mark.parametrize("kwargs", [{"n": 19}, {"n": 0}, {"length": 1}, {"vocab": 2}, {"vocab": 0}])
def test_copy_task_bad_arguments(kwargs):
    with pytest.raises(DataError, match="make_copy_task: need n >= 20, length >= 2, vocab >= 3"):
        make_copy_task(**kwargs)


# ------------------------------------------------------------------------------------- size and speed

@pytest.mark.parametrize("model", [MLP(64, 10), CNN(), GRUForecaster(), TransformerClassifier(16, 2), LinearModel(30, 2)],
                         ids=["mlp", "cnn", "gru", "transformer", "linear"])
def test_count_params(model):
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_count_params_known_values_and_frozen():
    assert count_params(MLP(64, 10, hidden=(64,))) == 64 * 64 + 64 + 64 * 10 + 10
    assert count_params(LinearModel(30, 2)) == 62
    m = MLP(64, 10, hidden=(64,))
    m.net[1].weight.requires_grad_(False)
    assert count_params(m) == 64 + 64 * 10 + 10  # trainable only


def test_time_per_step(diabetes):
    digits = load_datasets("digits")
    t = time_per_step(MLP(64, 10), digits, batch_size=32, steps=3, device="cpu")
    assert isinstance(t, float) and 0 < t < 5
    t = time_per_step(MLP(10, 1), diabetes, steps=2, device="cpu")
    assert isinstance(t, float) and t > 0
