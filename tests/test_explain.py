"""Tests for trainkit.explain: the scikit-learn wrappers, permutation importance (against scikit-learn) and integrated
gradients (against Captum), on small built cases, and the errors bad input gets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import IntegratedGradients
from sklearn.base import clone
from sklearn.inspection import permutation_importance as sk_permutation_importance
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from trainkit.core import DataError
from trainkit.datasets import load_datasets
from trainkit.explain import (PATH_METHODS, Importances, TorchClassifier, TorchRegressor, completeness_error,
                              integrated_gradients, output_of, path_points, permutation_importance, plot_attributions)
from trainkit.learner import Learner
from trainkit.models import CNN, MLP, LinearModel


def _rows(n, seed):
    "n rows, 4 features; the class depends on x0 and x1 only (x2, x3 are noise)."
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)


@pytest.fixture(scope="module")
def table():
    "200 held-out rows: what importance is measured on."
    return _rows(200, 0)


@pytest.fixture(scope="module")
def net():
    "A small MLP trained on 200 other rows with a few hundred full-batch Adam steps."
    X, y = _rows(200, 1)
    torch.manual_seed(0)
    model = MLP(4, 2, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    return model.eval()


# --------------------------------------------------------------------------------------- wrappers

def test_classifier_wraps_a_module(net, table):
    X, y = table
    est = TorchClassifier(net)
    np.testing.assert_array_equal(est.classes_, [0, 1])
    proba = est.predict_proba(X)
    assert proba.shape == (200, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-12)
    np.testing.assert_array_equal(est.predict(X), proba.argmax(1))
    assert est.score(X, y) == pytest.approx((est.predict(X) == y).mean())
    assert est.score(X, y) > 0.95
    assert est.predict(torch.tensor(X)).shape == (200,)  # tensors work too
    assert est.predict(pd.DataFrame(X)).shape == (200,)  # and numeric frames


def test_classifier_batches_and_restores_the_mode(net, table):
    X, _ = table
    net.train()
    try:
        small = TorchClassifier(net, batch_size=7).predict_proba(X)
        assert net.training, "the wrapper must put the network's mode back"
    finally:
        net.eval()
    np.testing.assert_allclose(small, TorchClassifier(net).predict_proba(X), atol=1e-6)


def test_classifier_wraps_a_learner_with_its_preprocessor():
    data = load_datasets("breast_cancer")
    torch.manual_seed(0)
    learn = Learner(MLP(data.X_train.shape[1], 2, (8,)), data, device="cpu").fit(2)
    cols = list(data.preprocessor.feature_names_in_)
    est = TorchClassifier(learn, preprocessor=data.preprocessor)
    np.testing.assert_array_equal(est.classes_, [0, 1])
    assert est.score(data.rows("valid")[cols], data.y_valid.numpy()) == pytest.approx(learn.validate()["accuracy"])
    pipe = Pipeline([("prep", data.preprocessor), ("net", TorchClassifier(learn))])
    np.testing.assert_array_equal(pipe.predict(data.rows("valid")[cols]), est.predict(data.rows("valid")[cols]))


def test_classifier_reshapes_flat_images():
    digits = load_datasets("digits")
    torch.manual_seed(0)
    cnn = CNN().eval()
    flat = digits.X_valid[:10].flatten(1).numpy()
    est = TorchClassifier(cnn, input_shape=(1, 8, 8))
    with torch.no_grad():
        want = cnn(digits.X_valid[:10]).argmax(1).numpy()
    np.testing.assert_array_equal(est.predict(flat), want)
    np.testing.assert_array_equal(est.classes_, np.arange(10))


def test_regressor_scores_r2():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 3)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5], dtype=np.float32) + 0.1 * rng.normal(size=100).astype(np.float32)
    lin = LinearModel(3)
    with torch.no_grad():
        sk = LinearRegression().fit(X, y)
        lin.linear.weight.copy_(torch.tensor(sk.coef_[None], dtype=torch.float32))
        lin.linear.bias.fill_(float(sk.intercept_))
    est = TorchRegressor(lin)
    assert est.predict(X).shape == (100,)
    assert est.score(X, y) == pytest.approx(r2_score(y, sk.predict(X)), abs=1e-5)


def test_wrappers_refuse_to_fit_and_bad_models(net, table):
    X, y = table
    with pytest.raises(DataError, match="already trained"):
        TorchClassifier(net).fit(X, y)
    with pytest.raises(DataError, match="nn.Module or a Learner"):
        TorchClassifier("not a model").predict(X)
    with pytest.raises(DataError, match="no nn.Linear"):
        _ = TorchClassifier(nn.Sequential(nn.Identity())).classes_
    with pytest.raises(DataError, match="no rows"):
        TorchClassifier(net).predict(X[:0])
    assert clone(TorchClassifier(net, batch_size=5)).get_params()["batch_size"] == 5  # a well-behaved estimator


# --------------------------------------------------------------------------------------- permutation importance

@pytest.mark.parametrize("scoring", [None, "neg_log_loss", "balanced_accuracy"])
def test_permutation_importance_equals_sklearn(net, table, scoring):
    X, y = table
    est = TorchClassifier(net)
    ours = permutation_importance(est, X, y, scoring=scoring, n_repeats=7, seed=3)
    theirs = sk_permutation_importance(est, X, y, scoring=scoring, n_repeats=7, random_state=3)
    np.testing.assert_array_equal(ours.importances, theirs.importances)
    np.testing.assert_array_equal(ours.mean, theirs.importances_mean)
    np.testing.assert_array_equal(ours.std, theirs.importances_std)


def test_permutation_importance_on_a_frame_equals_sklearn(table):
    X, y = table
    frame = pd.DataFrame(X, columns=list("abcd")).assign(colour=np.where(y == 1, "red", "blue"))  # a text column too
    from sklearn.compose import make_column_transformer
    from sklearn.preprocessing import OneHotEncoder
    pipe = Pipeline([("prep", make_column_transformer((StandardScaler(), list("abcd")), (OneHotEncoder(), ["colour"]))),
                     ("model", LogisticRegression())]).fit(frame, y)
    ours = permutation_importance(pipe, frame, y, n_repeats=4, seed=0)
    theirs = sk_permutation_importance(pipe, frame, y, n_repeats=4, random_state=0)
    np.testing.assert_array_equal(ours.importances, theirs.importances)
    assert ours.names == ["a", "b", "c", "d", "colour"]
    assert ours.table().index[0] == "colour"  # it gives the class away


def test_an_ignored_feature_scores_exactly_zero(table):
    "A model that reads only x0: shuffling any other column changes nothing at all."
    X, y = table
    model = LinearModel(4, 2)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.weight[1, 0] = 5.0
        model.linear.bias.zero_()
    imp = permutation_importance(TorchClassifier(model), X, y, scoring="neg_log_loss", n_repeats=5)
    assert (imp.importances[1:] == 0).all()
    assert imp.mean[0] > 0.5 and not imp.table().loc["x0", "within_noise"]
    assert imp.table().loc[["x1", "x2", "x3"], "within_noise"].all()


def test_noise_features_are_within_noise(net, table):
    X, y = table
    t = permutation_importance(TorchClassifier(net), X, y, scoring="neg_log_loss", n_repeats=20).table()
    assert t.loc[["x2", "x3"], "within_noise"].all()
    assert not t.loc["x0", "within_noise"] and list(t.index[:2]) == ["x0", "x1"]


def test_importances_table_and_plot():
    imp = Importances(["a", "b", "c"], 0.9, np.array([[0.3, 0.5], [0.0, 0.0], [-0.01, 0.03]]))
    t = imp.table()
    assert list(t.index) == ["a", "c", "b"]
    np.testing.assert_allclose(t["mean"], [0.4, 0.01, 0.0])
    np.testing.assert_allclose(t["std"], [0.1, 0.02, 0.0])
    assert t["within_noise"].tolist() == [False, True, True]  # 0.4 > 2 * 0.1; 0.01 <= 0.04; 0 <= 0
    ax = imp.plot(title="t")
    assert ax.get_title(loc="left") == "t" and len(ax.patches) == 3
    import matplotlib.pyplot as plt
    plt.close("all")


def test_permutation_importance_bad_input(net, table):
    X, y = table
    est = TorchClassifier(net)
    with pytest.raises(DataError, match="200 rows and y has 10"):
        permutation_importance(est, X, y[:10])
    with pytest.raises(DataError, match=r"2-D.*\(200, 2, 2\)"):
        permutation_importance(est, X.reshape(200, 2, 2), y)
    with pytest.raises(DataError, match="n_repeats=0"):
        permutation_importance(est, X, y, n_repeats=0)
    with pytest.raises(DataError, match="'accurracy' is not a scikit-learn scorer"):
        permutation_importance(est, X, y, scoring="accurracy")
    with pytest.raises(DataError, match="scoring should be"):
        permutation_importance(est, X, y, scoring=3)
    with pytest.raises(DataError, match="has no predict"):
        permutation_importance(net, X, y)  # a bare nn.Module: wrap it first


# --------------------------------------------------------------------------------------- integrated gradients

@pytest.mark.parametrize("method", PATH_METHODS)
def test_path_points_weights_sum_to_one(method):
    for steps in (2, 3, 17):
        alphas, weights = path_points(steps, method)
        assert alphas.shape == weights.shape == (steps,)
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
        assert 0 <= float(alphas.min()) and float(alphas.max()) <= 1
    # exact for a polynomial of degree 3 (Gauss-Legendre with 2 points; the others converge)
    alphas, weights = path_points(2 if method == "gausslegendre" else 2000, method)
    assert float((weights * alphas ** 3).sum()) == pytest.approx(0.25, abs=1e-3)


def test_path_points_bad_input():
    with pytest.raises(DataError, match="use one of"):
        path_points(10, "simpson")
    with pytest.raises(DataError, match="at least 2"):
        path_points(1, "riemann_trapezoid")
    with pytest.raises(DataError, match="steps=0"):
        path_points(0)
    with pytest.raises(DataError, match="steps=2.5"):
        path_points(2.5)


def test_linear_model_is_exact_with_any_rule():
    "The gradient of a linear model is constant: IG = (x - baseline) * w[target], whatever the steps."
    torch.manual_seed(0)
    lin = LinearModel(6, 3)
    x, target = torch.randn(5, 6), torch.tensor([0, 1, 2, 1, 0])
    want = (x - 0.3) * lin.linear.weight.detach()[target]
    for method in PATH_METHODS:
        got = integrated_gradients(lin, x, target, baseline=0.3, steps=2, method=method)
        torch.testing.assert_close(got, want)
    assert completeness_error(lin, x, want, target, baseline=0.3).max() < 1e-5


@pytest.fixture(scope="module")
def cnn_and_digits():
    digits = load_datasets("digits")
    torch.manual_seed(0)
    cnn = CNN()
    opt = torch.optim.Adam(cnn.parameters(), lr=3e-3)
    for xb, yb in zip(digits.X_train.split(64), digits.y_train.split(64)):  # one epoch: a model that is not random
        opt.zero_grad()
        nn.functional.cross_entropy(cnn(xb), yb).backward()
        opt.step()
    return cnn.eval(), digits.X_valid[:6]


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_middle", "riemann_right"])
def test_integrated_gradients_equal_captum(cnn_and_digits, method):
    cnn, x = cnn_and_digits
    target = cnn(x).argmax(1)
    ours = integrated_gradients(cnn, x, target, steps=40, method=method)
    theirs = IntegratedGradients(cnn).attribute(x, target=target, n_steps=40, method=method)
    assert (ours - theirs).abs().max() <= 1e-5
    chunked = integrated_gradients(cnn, x, target, steps=40, method=method, chunk=50)  # several passes: same sum
    assert (chunked - theirs).abs().max() <= 1e-5


def test_captum_trapezoid_is_ours_scaled(cnn_and_digits):
    "Captum's riemann_trapezoid weights sum to (n-1)/n: every attribution is ours times that."
    cnn, x = cnn_and_digits
    ours = integrated_gradients(cnn, x, 3, steps=20, method="riemann_trapezoid")
    theirs = IntegratedGradients(cnn).attribute(x, target=3, n_steps=20, method="riemann_trapezoid")
    assert (ours * 19 / 20 - theirs).abs().max() <= 1e-5


def test_completeness_improves_with_steps_and_baselines_work(cnn_and_digits):
    cnn, x = cnn_and_digits
    target = cnn(x).argmax(1)
    few = completeness_error(cnn, x, integrated_gradients(cnn, x, target, steps=4), target)
    many = completeness_error(cnn, x, integrated_gradients(cnn, x, target, steps=512), target)
    assert many.max() < few.max() and many.max() < 5e-3
    image_baseline = x.mean(0)  # one input's shape: broadcast to every input
    attr = integrated_gradients(cnn, x, target, baseline=image_baseline, steps=512)
    assert completeness_error(cnn, x, attr, target, baseline=image_baseline).max() < 5e-3
    assert attr.shape == x.shape
    same = integrated_gradients(cnn, x, target, baseline=x, steps=8)  # no path: nothing to attribute
    assert same.abs().max() == 0


def test_output_of_and_mode_restored(cnn_and_digits):
    cnn, x = cnn_and_digits
    with torch.no_grad():
        want = cnn(x)[:, 2]
    torch.testing.assert_close(output_of(cnn, x, 2), want)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10)).train()
    integrated_gradients(model, x, 0, steps=4)
    assert model.training  # put back
    a = integrated_gradients(model, x, 0, steps=4)
    torch.testing.assert_close(a, integrated_gradients(model, x, 0, steps=4))  # dropout was off: deterministic


def test_integrated_gradients_bad_input(cnn_and_digits):
    cnn, x = cnn_and_digits
    with pytest.raises(DataError, match=r"out of range: the model has 10 output\(s\)"):
        integrated_gradients(cnn, x, 10)
    with pytest.raises(DataError, match="out of range"):
        integrated_gradients(cnn, x, -1)
    with pytest.raises(DataError, match="3 targets for 6 inputs"):
        integrated_gradients(cnn, x, torch.tensor([1, 2, 3]))
    with pytest.raises(DataError, match=r"baseline of shape \(8, 8\) does not fit"):
        integrated_gradients(cnn, x, 0, baseline=torch.zeros(8, 8))
    with pytest.raises(DataError, match="non-empty batch"):
        integrated_gradients(cnn, x[:0], 0)
    with pytest.raises(DataError, match="x should be a Tensor"):
        integrated_gradients(cnn, x.numpy(), 0)
    with pytest.raises(DataError, match="use one of"):
        integrated_gradients(cnn, x, 0, method="simpson")
    with pytest.raises(DataError, match="attributions of shape"):
        completeness_error(cnn, x, x[:2], 0)


def test_plot_attributions_draws_pairs(cnn_and_digits):
    cnn, x = cnn_and_digits
    attr = integrated_gradients(cnn, x[:3], 1, steps=8)
    fig = plot_attributions(x[:3], attr, ["a", "b", "c"], pyplot=False)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"]
    bottom = fig.axes[3].images[0]
    lo, hi = bottom.get_clim()
    assert lo == -hi  # a symmetric scale: white is zero
