"""Tests for trainkit.tune: metrics and search spaces, cross-validation, Optuna search (one process and two
processes sharing one SQLite study), L1 regularisation, the LR finder and the tuning panel (headless)."""
from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.metrics import accuracy_score, mean_absolute_error  # noqa: E402

import trainkit.tune as tune  # noqa: E402
from trainkit.clean import CleanSpec, clean  # noqa: E402
from trainkit.core import DataError, data_dir  # noqa: E402
from trainkit.data import collect, penguins_csv  # noqa: E402
from trainkit.datasets import Datasets, load_datasets, load_penguins  # noqa: E402
from trainkit.learner import Learner  # noqa: E402
from trainkit.models import MLP  # noqa: E402
from trainkit.prep import split as split_frame  # noqa: E402
from trainkit.panel import TuningPanel  # noqa: E402
from trainkit.tune import (L1Penalty, OptunaPruning, check_space, default_sampler, make_pruner,  # noqa: E402
                           cross_validate, lr_find, plot_search, search, suggest)

warnings.filterwarnings("ignore", category=UserWarning, module="optuna")  # "experimental" notices
optuna.logging.set_verbosity(optuna.logging.WARNING)

WORKER = Path(__file__).with_name("tune_worker.py")


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def penguins() -> Datasets:
    return load_penguins(seed=42, source=penguins_csv())  # the shipped CSV: no course database touched


@pytest.fixture(scope="module")
def birds() -> np.ndarray:
    "One individual id per development row of `penguins` (train rows, then valid rows), as in 04_tuning."
    frames = split_frame(clean(collect(penguins_csv()), CleanSpec.penguins())[0], "species",
                         groups="individual_id", seed=42)
    dev = pd.concat([frames.train, frames.valid])
    return dev["individual_id"].to_numpy(), dev["species"].to_numpy()


@pytest.fixture(scope="module")
def digits() -> Datasets:
    return load_datasets("digits")


@pytest.fixture(scope="module")
def breast_cancer() -> Datasets:
    return load_datasets("breast_cancer")


@pytest.fixture(scope="module")
def diabetes() -> Datasets:
    return load_datasets("diabetes")


def dev_set(data: Datasets):
    return torch.cat([data.X_train, data.X_valid]), torch.cat([data.y_train, data.y_valid])


def spy_folds(monkeypatch) -> list:
    "Record every list of (train, valid) index arrays `cross_validate` draws."
    seen, real = [], tune.folds
    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out)
        return out
    monkeypatch.setattr(tune, "folds", spy)
    return seen


def penguin_mlp(p: dict | None = None) -> torch.nn.Module:
    return MLP(14, 3, ((p or {}).get("width", 16),))


def digits_mlp(p: dict) -> torch.nn.Module:
    return MLP(64, 10, (p.get("width", 32),), dropout=p.get("dropout", 0.0))


# ------------------------------------------------------------------------------------------------ check_space

def test_check_space_valid_passes():
    space = {"lr": ("log", 1e-4, 1e-1), "dropout": ("float", 0, 0.5), "width": ("int", 8, 256),
             "wide": ["int", 1.0, 3.0], "act": ("choice", ["relu", "gelu"]), "bs": ("choice", (32, 64))}
    assert check_space(space) is space


@pytest.mark.parametrize("space", [{}, [], None, "lr", [("lr", ("log", 1e-4, 1e-1))]])
def test_check_space_must_be_non_empty_dict(space):
    with pytest.raises(DataError, match="non-empty dict"):
        check_space(space)


@pytest.mark.parametrize("spec,words", [
    (("exp", 1, 2), "use one of"),                 # unknown kind
    ("log", "use one of"),                         # not a tuple
    ((), "use one of"),                            # empty
    (("log", 0, 1), "low > 0"),
    (("log", -1e-3, 1), "low > 0"),
    (("float", 1, 1), "must be below"),
    (("float", 2, 1), "must be below"),
    (("int", 5, 3), "must be below"),
    (("float", "0", "1"), "two numbers"),
    (("float", 0, None), "two numbers"),
    (("float", 0), "two numbers"),
    (("float", 0, 1, 2), "two numbers"),
    (("int", True, 5), "two numbers"),             # bools are not numbers here
    (("float", 0, True), "two numbers"),
    (("int", 1.5, 3), "whole numbers"),
    (("int", 1, 3.5), "whole numbers"),
    (("choice", []), "non-empty list"),
    (("choice", ()), "non-empty list"),
    (("choice", "abc"), "non-empty list"),
    (("choice",), "non-empty list"),
])
def test_check_space_invalid_entry_is_named(spec, words):
    space = {"fine": ("log", 1e-3, 1e-1), "bad_entry": spec}
    with pytest.raises(DataError) as e:
        check_space(space)
    assert "'bad_entry'" in str(e.value) and words in str(e.value)
    assert "'fine'" not in str(e.value)


def test_suggest_draws_every_kind_within_bounds():
    space = check_space({"lr": ("log", 1e-4, 1e-1), "p": ("float", 0.1, 0.5), "w": ("int", 8, 12),
                         "act": ("choice", ["relu", "gelu"])})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        t = study.ask()
        v = suggest(t, space)
        assert 1e-4 <= v["lr"] <= 1e-1 and 0.1 <= v["p"] <= 0.5 and v["w"] in range(8, 13) and v["act"] in ("relu", "gelu")
        assert isinstance(v["w"], int)
        study.tell(t, 0.0)
    fixed = suggest(optuna.trial.FixedTrial({"lr": 1e-3, "p": 0.2, "w": 9, "act": "gelu"}), space)
    assert fixed == {"lr": 1e-3, "p": 0.2, "w": 9, "act": "gelu"}


# ------------------------------------------------------------------------------------------------ cross_validate

def check_frame(df: pd.DataFrame, k: int, metric: str, n_dev: int):
    assert list(df.index) == [*range(k), "mean", "std"]
    assert list(df.columns) == [metric, "rows"]
    folds = df.loc[list(range(k))]
    assert folds[metric].between(0, 1).all() if metric != "mae" else (folds[metric] > 0).all()
    assert df.loc["mean", metric] == pytest.approx(folds[metric].mean(), abs=1e-12)
    assert df.loc["std", metric] == pytest.approx(folds[metric].std(), abs=1e-12)
    assert folds["rows"].sum() == n_dev


def test_cross_validate_sklearn_logreg_matches_recomputed_folds(breast_cancer, monkeypatch):
    seen = spy_folds(monkeypatch)
    est = LogisticRegression(max_iter=500)
    df = cross_validate(est, breast_cancer, k=4)
    X, y = dev_set(breast_cancer)
    n = len(y)
    check_frame(df, 4, "accuracy", n)
    assert 0.9 < df.loc["mean", "accuracy"] <= 1
    # the folds partition the development set exactly: each row is validated once, and never trained on then
    (folds,) = seen
    assert len(folds) == 4
    valid = np.concatenate([va for _, va in folds])
    assert sorted(valid.tolist()) == list(range(n))
    for tr, va in folds:
        assert set(tr).isdisjoint(va) and len(tr) + len(va) == n
    # an oracle: scikit-learn's Pipeline of the preprocessor and the estimator, refitted on each fold's raw rows
    from sklearn.pipeline import Pipeline
    rows = pd.concat([breast_cancer.rows("train"), breast_cancer.rows("valid")])
    feats = rows[list(breast_cancer.preprocessor.feature_names_in_)]
    for i, (tr, va) in enumerate(folds):
        m = Pipeline([("prep", clone(breast_cancer.preprocessor)), ("model", clone(est))])
        m.fit(feats.iloc[tr], y[tr].numpy())
        assert df.loc[i, "accuracy"] == pytest.approx(accuracy_score(y[va].numpy(), m.predict(feats.iloc[va])))
        assert df.loc[i, "rows"] == len(va)
    # stratified: every fold holds each class in about the development set's share
    share = float(y.float().mean())
    assert all(abs(float(y[va].float().mean()) - share) < 0.02 for _, va in folds)
    # the estimator passed in is cloned, never fitted itself
    assert not hasattr(est, "coef_")


def test_cross_validate_refits_the_preprocessing_inside_each_fold(penguins, monkeypatch):
    "No leak: each fold's scaling is fitted on that fold's training rows alone; tensors-only data is folded as is."
    from dataclasses import replace
    from trainkit.prep import Preprocessor
    fitted_on, real = [], Preprocessor._fit
    monkeypatch.setattr(Preprocessor, "_fit", lambda self, X: (fitted_on.append(X.index.tolist()), real(self, X))[1])
    seen = spy_folds(monkeypatch)
    cross_validate(RandomForestClassifier(10, random_state=0), penguins, k=3)
    dev = pd.concat([penguins.rows("train"), penguins.rows("valid")])
    assert [sorted(ix) for ix in fitted_on] == [sorted(dev.index[tr].tolist()) for tr, _ in seen[0]]
    fitted_on.clear()
    cross_validate(RandomForestClassifier(10, random_state=0), replace(penguins, frames=None), k=3)
    assert fitted_on == []  # no rows kept: the tensors, preprocessed once, are folded


def test_cross_validate_never_touches_test_split(breast_cancer):
    poisoned = copy.copy(breast_cancer)
    poisoned.X_test = torch.full_like(breast_cancer.X_test, float("nan"))
    a = cross_validate(LogisticRegression(max_iter=500), breast_cancer, k=3)
    b = cross_validate(LogisticRegression(max_iter=500), poisoned, k=3)
    pd.testing.assert_frame_equal(a, b)


def test_cross_validate_groups_stay_in_one_fold(penguins, birds, monkeypatch):
    ids, species = birds
    X, y = dev_set(penguins)
    assert len(ids) == len(y)
    assert [penguins.classes[i] for i in y.tolist()] == list(species)  # same rows, same order
    seen = spy_folds(monkeypatch)
    df = cross_validate(RandomForestClassifier(20, random_state=0), penguins, k=3, groups=ids)
    check_frame(df, 3, "accuracy", len(y))
    assert df.loc["mean", "accuracy"] > 0.85
    (folds,) = seen
    fold_of = {}
    for i, (_, va) in enumerate(folds):
        for b in ids[va]:
            assert fold_of.setdefault(b, i) == i, f"bird {b} is in folds {fold_of[b]} and {i}"
    assert sorted(np.concatenate([va for _, va in folds]).tolist()) == list(range(len(y)))
    # without groups the same birds are spread over folds: the check above has teeth
    ungrouped = tune.folds(penguins, y, 3, None, 42)
    spread = {b for b in set(ids) if len({i for i, (_, va) in enumerate(ungrouped) if b in set(ids[va])}) > 1}
    assert spread


def test_cross_validate_network_builder(penguins, monkeypatch):
    seen = spy_folds(monkeypatch)
    built = []
    def build():
        built.append(MLP(14, 3, (16,)))
        return built[-1]
    df = cross_validate(build, penguins, k=2, epochs=2, lr=1e-2)
    n = len(dev_set(penguins)[1])
    check_frame(df, 2, "accuracy", n)
    assert len(built) == 2 and built[0] is not built[1]  # a fresh model per fold
    assert len(seen[0]) == 2


def test_cross_validate_regression_mae(diabetes, monkeypatch):
    seen = spy_folds(monkeypatch)
    df = cross_validate(Ridge(alpha=1.0), diabetes, k=3, metric="mae")
    X, y = dev_set(diabetes)
    check_frame(df, 3, "mae", len(y))
    from sklearn.pipeline import Pipeline
    rows = pd.concat([diabetes.rows("train"), diabetes.rows("valid")])[list(diabetes.preprocessor.feature_names_in_)]
    for i, (tr, va) in enumerate(seen[0]):  # the oracle: a Pipeline refitted on each fold's raw rows
        m = Pipeline([("prep", clone(diabetes.preprocessor)), ("model", Ridge(alpha=1.0))]).fit(rows.iloc[tr], y[tr].numpy())
        assert df.loc[i, "mae"] == pytest.approx(mean_absolute_error(y[va].numpy(), m.predict(rows.iloc[va])), rel=1e-5)
    # mae is the default metric for regression
    pd.testing.assert_frame_equal(cross_validate(Ridge(alpha=1.0), diabetes, k=3), df)


@pytest.mark.parametrize("k", [1, 0, -2, 2.0, "3"])
def test_cross_validate_needs_two_or_more_folds(penguins, k):
    with pytest.raises(DataError, match="at least 2 folds"):
        cross_validate(LogisticRegression(), penguins, k=k)


def test_cross_validate_k_above_rarest_class_names_class_and_count(penguins):
    y = dev_set(penguins)[1]
    counts = dict(zip(penguins.classes, torch.bincount(y).tolist()))
    rarest = min(counts, key=counts.get)
    k = counts[rarest] + 1
    with pytest.raises(DataError) as e:
        cross_validate(LogisticRegression(), penguins, k=k)
    msg = str(e.value)
    assert f"{{'{rarest}': {counts[rarest]}}}" in msg and f"k <= {counts[rarest]}" in msg
    assert all(c not in msg for c in counts if c != rarest)  # only the classes that are too small


@pytest.mark.parametrize("n_groups", [10, 0])
def test_cross_validate_groups_of_wrong_length(penguins, n_groups):
    n = len(dev_set(penguins)[1])
    with pytest.raises(DataError, match=f"groups has {n_groups} values.*has {n} rows"):
        cross_validate(LogisticRegression(), penguins, k=3, groups=list(range(n_groups)))


def test_cross_validate_wrong_task_metric(penguins):
    with pytest.raises(DataError, match="'mae' is a regression metric"):
        cross_validate(LogisticRegression(), penguins, k=3, metric="mae")


def test_cross_validate_scores_sklearn_models_with_the_learners_metrics(penguins):
    f1 = cross_validate(LogisticRegression(max_iter=1000), penguins, k=3, metric="f1")
    assert list(f1.columns) == ["f1", "rows"] and 0.8 < f1.loc["mean", "f1"] <= 1.0
    with pytest.raises(DataError, match="'roc_auc' is not computed here"):  # a test-time metric steers no fold
        cross_validate(LogisticRegression(), penguins, k=3, metric="roc_auc")


# ------------------------------------------------------------------------------------------------ search

DIGITS_SPACE = {"lr": ("log", 1e-3, 1e-1), "width": ("int", 8, 32), "dropout": ("float", 0.0, 0.3)}


def in_space(params: dict, space: dict) -> bool:
    for name, spec in space.items():
        v = params[name]
        if spec[0] == "choice":
            if v not in spec[1]:
                return False
        elif not spec[1] <= v <= spec[2]:
            return False
    return set(params) == set(space)


def test_search_small_study_on_digits_and_continue(digits, tmp_path):
    db = tmp_path / "tuning.db"
    study = search(digits_mlp, digits, DIGITS_SPACE, n_trials=4, epochs=2, storage=f"sqlite:///{db}",
                   study_name="digits")
    assert isinstance(study, optuna.Study) and db.is_file()
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(study.trials) == 4
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                        for t in study.trials)
    assert math.isfinite(study.best_value) and 0 < study.best_value <= 1
    assert study.best_value == max(t.value for t in done)
    for t in study.trials:
        assert in_space(t.params, DIGITS_SPACE), t.params
        assert isinstance(t.params["width"], int)
    for t in done:  # the objective is the best validation accuracy over the epochs, reported after each
        assert sorted(t.intermediate_values) == [0, 1]
        assert t.value == max(t.intermediate_values.values())
    # load_if_exists (the default) continues the same study
    more = search(digits_mlp, digits, DIGITS_SPACE, n_trials=2, epochs=1, storage=f"sqlite:///{db}",
                  study_name="digits")
    assert len(more.trials) == 6 and [t.number for t in more.trials] == list(range(6))
    assert len(optuna.load_study(study_name="digits", storage=f"sqlite:///{db}").trials) == 6


def test_search_loss_is_minimised(penguins, tmp_path):
    study = search(penguin_mlp, penguins, {"lr": ("log", 1e-3, 1e-1)}, n_trials=2, epochs=2, metric="loss",
                   pruner="none", storage=f"sqlite:///{tmp_path / 't.db'}", study_name="loss")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert all(t.value == min(t.intermediate_values.values()) for t in study.trials)
    assert study.best_value == min(t.value for t in study.trials) and study.best_value > 0


def test_search_default_storage_is_in_data_dir(penguins):
    study = search(penguin_mlp, penguins, {"lr": ("log", 1e-3, 1e-1)}, n_trials=1, epochs=2, pruner="none")
    assert (data_dir() / "tuning.db").is_file()
    assert len(optuna.load_study(study_name="trainkit", storage=f"sqlite:///{data_dir() / 'tuning.db'}").trials) == 1
    assert study.study_name == "trainkit"


@pytest.mark.parametrize("name,cls", [("none", optuna.pruners.NopPruner), ("median", optuna.pruners.MedianPruner),
                                      ("percentile", optuna.pruners.PercentilePruner),
                                      ("hyperband", optuna.pruners.HyperbandPruner)])
def test_search_accepts_pruners(penguins, tmp_path, name, cls):
    study = search(penguin_mlp, penguins, {"lr": ("log", 1e-3, 1e-1)}, n_trials=1, epochs=2, pruner=name,
                   storage=f"sqlite:///{tmp_path / 't.db'}")
    assert isinstance(study.pruner, cls) and len(study.trials) == 1


def test_search_draws_the_optimizer_and_sgds_momentum(penguins, tmp_path, monkeypatch):
    "An 'optimizer' choice in the space goes to the Learner: AdamW, or SGD with the drawn momentum."
    import trainkit.tune as tune
    built = []
    real = tune.Learner

    class Spy(real):
        def _setup_optim(self):
            super()._setup_optim()
            built.append(self.opt)
    monkeypatch.setattr(tune, "Learner", Spy)
    space = {"lr": ("log", 1e-3, 1e-1), "optimizer": ("choice", ["adamw", "sgd"]), "momentum": ("float", 0.5, 0.9)}
    study = search(penguin_mlp, penguins, space, n_trials=8, epochs=1, pruner="none", storage=":memory:",
                   sampler=optuna.samplers.RandomSampler(seed=1))
    for trial, opt in zip(study.trials, built):
        if trial.params["optimizer"] == "sgd":
            assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == trial.params["momentum"]
        else:
            assert isinstance(opt, torch.optim.AdamW)
    assert {t.params["optimizer"] for t in study.trials} == {"adamw", "sgd"}
    with pytest.raises(DataError, match="optimizer='adam'"):
        search(penguin_mlp, penguins, {"optimizer": ("choice", ["adam"])}, n_trials=1, epochs=1, storage=":memory:")


def test_search_defaults_are_the_benchmarked_ones(penguins):
    "Independent TPE (bench/tune_speed.py: Optuna 5's multivariate TPE got stuck) and the lenient percentile pruner."
    import inspect
    s = default_sampler(40, seed=3)
    assert isinstance(s, optuna.samplers.TPESampler) and s._multivariate is False and s._n_startup_trials == 10
    assert default_sampler(8)._n_startup_trials == 3
    assert inspect.signature(search).parameters["pruner"].default == "percentile"
    p = make_pruner("percentile")
    assert isinstance(p, optuna.pruners.PercentilePruner) and p._percentile == 90.0
    study = search(penguin_mlp, penguins, {"lr": ("log", 1e-3, 1e-1)}, n_trials=1, epochs=1, storage=":memory:")
    assert isinstance(study.pruner, optuna.pruners.PercentilePruner) and study.sampler._multivariate is False


def test_search_bad_arguments_fail_before_anything_runs(penguins, tmp_path):
    db = tmp_path / "t.db"
    url = f"sqlite:///{db}"
    with pytest.raises(DataError, match=r"pruner='asha'.*'median'"):
        search(penguin_mlp, penguins, {"lr": ("log", 1e-3, 1e-1)}, n_trials=1, pruner="asha", storage=url)
    with pytest.raises(DataError, match="log scale needs low > 0"):
        search(penguin_mlp, penguins, {"lr": ("log", 0, 1)}, n_trials=1, storage=url)
    with pytest.raises(DataError, match="'rmse' is a regression metric"):
        search(penguin_mlp, penguins, {"lr": ("log", 1e-3, 1e-1)}, n_trials=1, metric="rmse", storage=url)
    assert not db.exists()


def test_search_median_pruner_prunes_hopeless_trials(penguins, tmp_path):
    # lr down to 1e-6 leaves some trials at chance after 3 epochs; the median pruner (5 startup trials,
    # 2 warm-up steps) stops them at their third report.
    study = search(penguin_mlp, penguins, {"lr": ("log", 1e-6, 1.0)}, n_trials=7, epochs=3, pruner="median",
                   storage=f"sqlite:///{tmp_path / 't.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.state.name, t.params, t.value) for t in study.trials]
    assert all(t.number >= 5 and max(t.intermediate_values) == 2 for t in pruned)


class FakeTrial:
    def __init__(self, prune_at: int):
        self.reports, self.prune_at = [], prune_at
    def report(self, value, step):
        self.reports.append((value, step))
    def should_prune(self) -> bool:
        return len(self.reports) > self.prune_at


@pytest.mark.parametrize("metric,key", [("accuracy", "accuracy"), ("loss", "valid_loss")])
def test_optuna_pruning_callback_raises_trial_pruned(penguins, metric, key):
    trial = FakeTrial(prune_at=1)
    torch.manual_seed(0)
    learn = Learner(penguin_mlp(), penguins, device="cpu", callbacks=[OptunaPruning(trial, metric)])
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1"):
        learn.fit(5, lr=1e-2)
    assert len(learn.history) == 2
    assert trial.reports == [(h[key], h["epoch"]) for h in learn.history]
    assert not learn.model.training  # left in eval mode, as after a normal fit


def test_optuna_pruning_callback_lets_unpruned_run_finish(penguins):
    trial = FakeTrial(prune_at=99)
    learn = Learner(penguin_mlp(), penguins, device="cpu", callbacks=[OptunaPruning(trial, "f1")]).fit(3, lr=1e-2)
    assert [s for _, s in trial.reports] == [0, 1, 2]
    assert [v for v, _ in trial.reports] == [h["f1"] for h in learn.history]


def test_search_one_epoch_on_penguins(penguins, tmp_path):
    # penguins: 244 training rows = 4 batches of 64, so one epoch is 4 optimizer steps
    study = search(penguin_mlp, penguins, {"lr": ("log", 1e-3, 1e-1)}, n_trials=1, epochs=1, pruner="none",
                   storage=f"sqlite:///{tmp_path / 't.db'}")
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def run_workers(db: Path, barrier: Path, n_workers: int = 2, n_trials: int = 3):
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(db), "shared", str(n_trials), str(barrier), str(i),
                               str(n_workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n_workers)]
    out = []
    for p in procs:
        try:
            so, se = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
        out.append((p.returncode, so, se))
    return out


def test_two_processes_share_one_sqlite_study(tmp_path):
    "Two local processes call `search` at the same moment on the same (new) SQLite file, as the docs allow."
    db = tmp_path / "shared.db"
    results = run_workers(db, tmp_path / "barrier")
    for rc, so, se in results:
        errors = [ln for ln in se.splitlines() if re.match(r"[\w.]+(Error|Exception): ", ln)]
        last = errors[-1] if errors else "\n".join(se.strip().splitlines()[-3:])
        assert rc == 0, f"worker exited {rc}; its error (trainkit.tune.search retries study creation):\n{last}"
        assert so.startswith("done ")
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}")
    states = [t.state for t in study.trials]
    assert len(states) == 6
    assert all(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
    assert sorted(t.number for t in study.trials) == list(range(6))


def test_plot_search_returns_two_axes():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True) * 10 - t.suggest_int("width", 8, 64) / 64,
                   n_trials=8)
    try:
        axes = plot_search(study)
        assert len(axes) == 2 and all(isinstance(a, Axes) for a in axes)
        history, importance = axes
        assert len(history.collections) + len(history.lines) > 0
        assert {t.get_text() for t in importance.get_yticklabels()} >= {"lr", "width"}
    finally:
        import matplotlib.pyplot as plt
        plt.close("all")


# ------------------------------------------------------------------------------------------------ L1Penalty

def test_l1_penalty_weight_must_be_non_negative():
    with pytest.raises(DataError, match="must be >= 0"):
        L1Penalty(-1e-4)
    assert L1Penalty(0).weight == 0


def test_l1_penalty_adds_weight_norm_without_biases():
    torch.manual_seed(0)
    model = MLP(4, 3, (5,))
    learn = type("L", (), {})()
    learn.model, learn.loss = model, torch.tensor(1.0)
    L1Penalty(0.5).after_loss(learn)
    w = model.net[1].weight.abs().sum() + model.net[3].weight.abs().sum()
    assert float(learn.loss.detach()) == pytest.approx(1.0 + 0.5 * float(w.detach()), rel=1e-6)


def fit_digits(digits, callbacks=(), epochs=3):
    torch.manual_seed(0)
    model = MLP(64, 10, (32,))
    return Learner(model, digits, device="cpu", seed=0, callbacks=list(callbacks)).fit(epochs, lr=1e-2)


def test_l1_penalty_raises_training_loss_and_shrinks_weights(digits):
    plain = fit_digits(digits)
    zero = fit_digits(digits, [L1Penalty(0.0)])
    l1 = fit_digits(digits, [L1Penalty(1e-3)])
    assert [h["train_loss"] for h in zero.history] == [h["train_loss"] for h in plain.history]
    assert l1.history[0]["train_loss"] > plain.history[0]["train_loss"] + 0.05
    def norm(m):
        return sum(float(p.detach().abs().sum()) for p in m.parameters() if p.ndim > 1)
    assert norm(l1.model) < 0.9 * norm(plain.model)


# ------------------------------------------------------------------------------------------------ lr_find

def test_lr_find_restores_weights_and_suggests_below_min_loss(digits):
    torch.manual_seed(0)
    model = MLP(64, 10, (32,))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    res = lr_find(model, digits, start=1e-5, end=1.0, steps=60, device="cpu")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    lrs, losses = res["lrs"], res["losses"]
    assert 2 < len(lrs) == len(losses) <= 60
    assert lrs[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(lrs, lrs[1:])) and lrs[-1] <= 1.0 * (1 + 1e-9)
    assert all(math.isfinite(x) for x in losses[:-1])
    assert res["min_loss_lr"] == lrs[int(np.argmin(losses))]
    assert res["suggestion"] in lrs and res["suggestion"] < res["min_loss_lr"]
    # the model trains normally afterwards from its untouched initial weights
    Learner(model, digits, device="cpu").fit(1)


@pytest.mark.parametrize("start,end", [(0, 1.0), (-1e-3, 1.0), (1e-3, 1e-3), (1.0, 1e-3), (0, 0)])
def test_lr_find_bad_range(digits, start, end):
    with pytest.raises(DataError, match="0 < start < end"):
        lr_find(MLP(64, 10, (8,)), digits, start=start, end=end, steps=5)


# ------------------------------------------------------------------------------------------------ TuningPanel

def test_panel_metric_must_fit_task(penguins):
    with pytest.raises(DataError, match="regression metric"):
        TuningPanel(penguins, metric="mae")
    assert TuningPanel(penguins, metric="f1").metric == "f1"


@pytest.mark.parametrize("values,words", [
    ({"momentum": 0.9}, "Unknown hyperparameter 'momentum'"),
    ({"lr": 2.0}, r"lr=2.0: must be a number in \[1e-05, 1.0\]"),
    ({"lr": 0}, "lr=0: must be"),
    ({"lr": float("nan")}, "lr=nan"),
    ({"epochs": 0}, "epochs=0"),
    ({"epochs": 201}, "epochs=201"),
    ({"epochs": True}, "epochs=True"),
    ({"dropout": 0.95}, "dropout=0.95"),
    ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    ({"width": "64"}, "width='64'"),
    ({"width": False}, "width=False"),
    ({"batch_size": 48}, r"batch_size=48: choose from \(16, 32, 64, 128, 256\)"),
    ({"batch_size": True}, "batch_size=True"),
])
def test_panel_set_validation(penguins, values, words):
    panel = TuningPanel(penguins)
    with pytest.raises(DataError, match=words):
        panel.set(**values)
    assert panel.values == TuningPanel.DEFAULTS


def test_panel_set_converts_types(penguins):
    panel = TuningPanel(penguins).set(lr=1, epochs=3.0, width=16.0, weight_decay=0, batch_size=32)
    assert panel.values == {**TuningPanel.DEFAULTS, "lr": 1.0, "epochs": 3, "width": 16, "weight_decay": 0.0,
                            "batch_size": 32}
    assert [type(panel.values[k]) for k in ("lr", "epochs", "width", "weight_decay")] == [float, int, int, float]


def test_panel_set_batch_size_accepted_means_trainable(penguins):
    panel = TuningPanel(penguins).set(epochs=3)
    try:
        panel.set(batch_size=128.0)  # equal to an allowed size: either refuse it here, or train with it
    except DataError:
        return
    panel.train()  # a value set() accepted must not make train() fail
    assert panel.runs[0]["summary"]["batch_size"] == 128


def test_panel_failed_set_changes_nothing(penguins):
    pytest.importorskip("ipywidgets")
    panel = TuningPanel(penguins)
    ui = panel.widget()
    with pytest.raises(DataError, match="epochs=0"):
        panel.set(lr=1e-2, epochs=0)  # one good value, one bad: the call is refused
    assert ui.controls["lr"].value == panel.values["lr"], \
        f"the panel would train with lr={panel.values['lr']}; the slider shows {ui.controls['lr'].value}"
    assert panel.values == TuningPanel.DEFAULTS


def test_panel_train_blocking_records_run_and_compare(penguins):
    panel = TuningPanel(penguins).set(epochs=2, lr=1e-2, width=16)
    assert panel.history().empty
    panel.train()
    h = panel.history()
    assert list(h.index) == [1]
    row = h.loc[1]
    assert (row["lr"], row["epochs"], row["width"], row["batch_size"]) == (1e-2, 2, 16, 64)
    assert row["epochs run"] == 2 and not row["stopped"]
    last = panel.runs[0]["history"][-1]
    assert row["accuracy"] == last["accuracy"] and row["valid_loss"] == last["valid_loss"]
    assert panel.runs[0]["params"] == {**TuningPanel.DEFAULTS, "epochs": 2, "lr": 1e-2, "width": 16}
    panel.set(lr=1e-3, epochs=3).train()
    assert list(panel.history().index) == [1, 2] and panel.history().loc[2, "epochs run"] == 3
    fig = panel.compare(1, 2)
    assert isinstance(fig, Figure)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["run 1 (lr 0.01, epochs 2) valid", "run 1 (lr 0.01, epochs 2) train",
                      "run 2 (lr 0.001, epochs 3) valid", "run 2 (lr 0.001, epochs 3) train"]  # the values that differ
    assert len(fig.axes[0].get_lines()[2].get_xdata()) == 3
    for a, b in [(1, 3), (0, 1), (2, -1)]:
        with pytest.raises(DataError, match="No run"):
            panel.compare(a, b)


def wait_for(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_panel_background_stop_after_first_epoch(digits):
    panel = TuningPanel(digits).set(epochs=60, width=16)
    panel.train(block=False)
    assert panel.running
    wait_for(lambda: len(panel.live) >= 1)
    panel.stop()
    panel.wait(60)
    assert not panel.running and panel.error is None
    (run,) = panel.runs
    s = run["summary"]
    assert s["stopped"] and 1 <= s["epochs run"] < 60 and s["epochs"] == 60
    assert s["epochs run"] == len(run["history"])


def test_panel_second_train_while_running_raises(digits):
    panel = TuningPanel(digits).set(epochs=60, width=16)
    panel.train(block=False)
    try:
        with pytest.raises(DataError, match="in progress"):
            panel.train()
        with pytest.raises(DataError, match="in progress"):
            panel.train(block=False)
    finally:
        panel.stop()
        panel.wait(60)
    assert not panel.running and len(panel.runs) == 1
    assert panel.runs[0]["summary"]["stopped"]
    assert panel.runs[0]["summary"]["epochs run"] < 60


def test_panel_widget_sliders_and_train_button(penguins):
    pytest.importorskip("ipywidgets")
    panel = TuningPanel(penguins)
    ui = panel.widget()
    assert ui.panel is panel and set(ui.controls) == set(TuningPanel.DEFAULTS)
    assert set(ui.buttons) == {"Train", "Stop", "Compare"}
    table, status = panel._ui["table"], panel._ui["status"]
    assert "no runs yet" in table.value and "press Train" in status.value
    ui.controls["lr"].value = 1e-2
    ui.controls["epochs"].value = 2
    ui.controls["width"].value = 8
    ui.controls["batch_size"].value = 32
    assert panel.values == {**TuningPanel.DEFAULTS, "lr": 1e-2, "epochs": 2, "width": 8, "batch_size": 32}
    ui.buttons["Train"].click()
    panel.wait(60)
    assert not panel.running and panel.error is None
    assert len(panel.runs) == 1 and panel.runs[0]["params"]["lr"] == 1e-2
    assert "<table" in table.value and "0.01" in table.value
    assert panel._ui["curves"].value[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(list(p.options) == [1] for p in panel._ui["picks"])
    first_status = status.value
    ui.controls["lr"].value = 1e-3
    ui.buttons["Train"].click()
    panel.wait(60)
    assert len(panel.runs) == 2 and panel.runs[1]["params"]["lr"] == pytest.approx(1e-3)
    pick_a, pick_b = panel._ui["picks"]
    assert list(pick_a.options) == [1, 2]
    pick_a.value, pick_b.value = 1, 2
    ui.buttons["Compare"].click()
    compare_img = ui.children[-1]
    assert compare_img.value[:8] == b"\x89PNG\r\n\x1a\n"
    # once the button's run has ended, the status line reports it (not "training: ...")
    assert first_status.startswith("1 run(s); last: accuracy"), f"after the first run ended: {first_status!r}"
    assert status.value.startswith("2 run(s); last: accuracy"), f"after the second run ended: {status.value!r}"


def test_panel_set_from_code_moves_sliders_without_recursion(penguins):
    pytest.importorskip("ipywidgets")
    panel = TuningPanel(penguins)
    ui = panel.widget()
    calls = []
    def counting_set(**values):
        calls.append(values)
        return TuningPanel.set(panel, **values)
    panel.set = counting_set  # the sliders' observers call panel.set: count every call
    panel.set(lr=0.05, epochs=7, width=32, dropout=0.25, weight_decay=0.1, batch_size=128)
    assert calls == [dict(lr=0.05, epochs=7, width=32, dropout=0.25, weight_decay=0.1, batch_size=128)]
    for name, c in ui.controls.items():
        assert c.value == panel.values[name], name
    assert not panel._syncing
    ui.controls["dropout"].value = 0.5  # a user's move still reaches the panel, once
    assert panel.values["dropout"] == 0.5 and len(calls) == 2


@pytest.mark.parametrize("name,value", [("epochs", 150), ("width", 1000), ("weight_decay", 0.8)])
def test_panel_set_within_limits_is_shown_by_slider(penguins, name, value):
    pytest.importorskip("ipywidgets")
    panel = TuningPanel(penguins)
    ui = panel.widget()
    panel.set(**{name: value})  # accepted: within TuningPanel.LIMITS
    assert panel.values[name] == value
    assert ui.controls[name].value == value, f"panel trains with {name}={value}; the slider shows {ui.controls[name].value}"


def test_panel_background_error_is_shown(penguins):
    pytest.importorskip("ipywidgets")
    panel = TuningPanel(penguins, build=lambda p: MLP(14, 2, (p["width"],)))  # 2 outputs for 3 classes
    ui = panel.widget()
    ui.buttons["Train"].click()
    panel.wait(60)
    assert not panel.running and panel.runs == []
    assert panel.error.startswith("DataError: The model's output is (2, 2)")
    assert "The model&#x27;s output" in panel._ui["status"].value or "The model's output" in panel._ui["status"].value
    assert "color:#b00" in panel._ui["status"].value
    # a blocking run raises, and records the error too
    with pytest.raises(DataError, match="model's output"):
        panel.train(block=True)
    assert panel.error.startswith("DataError")
    # a good run afterwards clears the error
    panel.build = penguin_mlp
    panel.set(epochs=2)
    panel.train(block=True)
    assert panel.error is None and len(panel.runs) == 1 and "1 run(s)" in panel._ui["status"].value
