"""Tests for trainkit.prep (split, leakage checks, Preprocessor) and trainkit.datasets."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from trainkit.clean import CleanSpec, clean
from trainkit.core import DataError
from trainkit.data import from_csv, penguins_csv
from trainkit.datasets import PENGUIN_DROP, Datasets, load_datasets
from trainkit.prep import Preprocessor, Splits, Target, check_leakage, split

# ------------------------------------------------------------------------------------------------ fixtures


def frame(n_per_class=(400, 400, 200), seed=0) -> pd.DataFrame:
    "Distinct rows: a unique id-like feature, a noisy feature and a class column."
    rng = np.random.default_rng(seed)
    y = np.concatenate([[f"c{i}"] * n for i, n in enumerate(n_per_class)])
    n = len(y)
    return pd.DataFrame({"x": np.arange(n, dtype=float), "z": rng.normal(size=n), "y": y},
                        index=pd.Index(rng.permutation(n) + 1000))


def index_sets(splits):
    return [set(s.index) for s in splits]


@pytest.fixture(scope="module")
def _penguin_splits():
    df, _ = clean(from_csv(penguins_csv()), CleanSpec.penguins())
    return split(df, "species", groups="individual_id")


@pytest.fixture
def psplits(_penguin_splits):
    "Clean penguin train/valid/test frames (copies)."
    return Splits(*(s.copy() for s in _penguin_splits))


@pytest.fixture
def fitted(psplits):
    "The penguin features' Preprocessor, fitted on the training split (the target is encoded apart, by Target)."
    return Preprocessor(drop=PENGUIN_DROP).fit(psplits.train.drop(columns="species"))


# -------------------------------------------------------------------------------------------------- split

def test_default_fractions_are_70_15_15():
    df = frame()
    s = split(df, "y")
    assert isinstance(s, Splits) and s.train is s[0] and s.test is s[2]
    n = len(df)
    sizes = s.sizes()
    assert sum(sizes.values()) == n
    for name, frac in zip(("train", "valid", "test"), (0.7, 0.15, 0.15)):
        assert abs(sizes[name] - frac * n) <= 2, sizes
    assert "train=" in repr(s)


def test_stratified_class_shares():
    df = frame((500, 300, 120, 80))
    overall = df["y"].value_counts(normalize=True)
    for part in split(df, "y", seed=3):
        shares = part["y"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert np.abs(shares - overall).max() < 0.01


def test_unstratified_split_still_partitions():
    df = frame()
    s = split(df, "y", stratify=False)
    assert sorted(set().union(*index_sets(s))) == sorted(df.index)
    assert sum(len(p) for p in s) == len(df)


def test_same_seed_same_rows_different_seed_different():
    df = frame()
    a, b, c = split(df, "y", seed=7), split(df, "y", seed=7), split(df, "y", seed=8)
    assert index_sets(a) == index_sets(b)
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    assert index_sets(a) != index_sets(c)
    assert index_sets(a)[0] != index_sets(c)[0]


def test_groups_never_span_splits():
    rng = np.random.default_rng(1)
    bird = np.repeat([f"b{i}" for i in range(200)], rng.integers(1, 6, 200))
    df = pd.DataFrame({"bird": bird, "m": rng.normal(size=len(bird))})
    df["y"] = np.where(df["bird"].str[1:].astype(int) % 3 == 0, "a", "b")  # the class is a bird's property
    s = split(df, "y", groups="bird", seed=5)
    g = [set(p["bird"]) for p in s]
    assert not (g[0] & g[1]) and not (g[0] & g[2]) and not (g[1] & g[2])
    assert set().union(*g) == set(df["bird"])
    assert sum(len(p) for p in s) == len(df)
    assert check_leakage(s, "y", "bird") == {"rows": 0, "groups": 0}
    # each split keeps every row of its birds
    for p in s:
        assert len(p) == df["bird"].isin(set(p["bird"])).sum()


def test_identical_rows_never_span_splits():
    rng = np.random.default_rng(2)
    base = pd.DataFrame({"a": np.arange(60) % 7, "b": np.arange(60) * 1.5, "y": np.where(np.arange(60) % 2, "p", "q")})
    df = base.loc[base.index.repeat(rng.integers(1, 8, 60))].reset_index(drop=True)
    assert df.duplicated().sum() > 60  # many exact copies
    s = split(df, "y", seed=0)
    seen = [set(map(tuple, p[["a", "b"]].to_numpy())) for p in s]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(p) for p in s) == len(df)
    assert check_leakage(s, "y")["rows"] == 0


def test_rows_differing_only_in_target_stay_together():
    "Copies of a feature row with different labels are one unit: they land in the same split."
    df = pd.DataFrame({"f": list(range(40)) * 2, "y": ["a"] * 40 + ["b"] * 40})
    s = split(df, "y", seed=1)
    assert check_leakage(s, "y")["rows"] == 0
    f = [set(p["f"]) for p in s]
    assert not (f[0] & f[1]) and not (f[0] & f[2]) and not (f[1] & f[2])


def test_check_leakage_counts():
    tr = pd.DataFrame({"f": [1, 2, 3], "g": ["a", "b", "c"], "y": ["x", "x", "y"]})
    va = pd.DataFrame({"f": [1, 4], "g": ["a", "d"], "y": ["y", "x"]})  # f=1 leaks (label differs), group a leaks
    te = pd.DataFrame({"f": [2, 5, 6], "g": ["b", "d", "e"], "y": ["x", "y", "y"]})  # f=2 leaks; groups b, d leak
    s = Splits(tr, va, te)
    # rows compare every column but the target (the group column included): (1, a) and (2, b) leak
    assert check_leakage(s, "y", "g") == {"rows": 2, "groups": 3}
    assert check_leakage(Splits(tr[["f", "y"]], va[["f", "y"]], te[["f", "y"]]), "y") == {"rows": 2}
    # without a target the label is part of the row: f=1 differs in y, f=2 does not
    assert check_leakage(Splits(tr[["f", "y"]], va[["f", "y"]], te[["f", "y"]])) == {"rows": 1}
    assert check_leakage(s, "y") == {"rows": 2}  # no group count unless asked
    clean_s = Splits(tr.iloc[:1], va.iloc[1:], te.iloc[2:])
    assert check_leakage(clean_s, "y", "g") == {"rows": 0, "groups": 0}


@pytest.mark.parametrize("kwargs, match", [
    ({"fractions": (0.7, 0.2, 0.2)}, "sum to 1.1"),
    ({"fractions": (0.5, 0.2, 0.2)}, "sum to 0.9"),
    ({"fractions": (0.8, 0.2)}, "three numbers"),
    ({"fractions": (0.6, 0.2, 0.1, 0.1)}, "three numbers"),
    ({"fractions": (0.0, 0.5, 0.5)}, "train > 0"),
    ({"fractions": (1.2, -0.1, -0.1)}, r"\[0, 1\)"),
    ({"target": "label"}, "target column 'label'"),
    ({"groups": "animal"}, "groups column 'animal'"),
])
def test_split_bad_arguments(kwargs, match):
    kwargs = {"target": "y", **kwargs}
    with pytest.raises(DataError, match=match):
        split(frame((20, 20)), **kwargs)


def test_split_empty_frame():
    with pytest.raises(DataError, match="no rows"):
        split(frame((20, 20)).iloc[:0], "y")


def test_split_single_class_target():
    with pytest.raises(DataError, match="single class 'c0'"):
        split(frame((30,)), "y")


def test_split_target_with_nan_names_rows():
    df = frame((20, 20))
    bad = df.index[5]
    df.loc[bad, "y"] = np.nan
    with pytest.raises(DataError, match=rf"missing in rows \[{bad}\]"):
        split(df, "y")


def test_split_too_few_distinct_rows_unstratified_raises_dataerror():
    "Twenty copies of one feature row are one unit, which cannot be cut three ways: say so."
    df = pd.DataFrame({"x": [0] * 20, "y": ["a"] * 10 + ["b"] * 10})
    with pytest.raises(DataError):
        split(df, "y", stratify=False)


def test_split_class_too_rare_to_stratify():
    df = pd.concat([frame((50, 50)), pd.DataFrame({"x": [-1.0], "z": [0.0], "y": ["rare"]})], ignore_index=True)
    with pytest.raises(DataError, match="Cannot stratify.*'rare'"):
        split(df, "y")
    # ...which stratify=False allows
    assert sum(len(p) for p in split(df, "y", stratify=False)) == len(df)


# ---------------------------------------------------------------------------------- split: property tests

@st.composite
def labelled_frames(draw, duplicates=False):
    counts = draw(st.lists(st.integers(10, 40), min_size=2, max_size=4))
    y = np.concatenate([[f"k{i}"] * c for i, c in enumerate(counts)])
    n = len(y)
    order = draw(st.permutations(range(n)))
    if duplicates:  # n // 3 distinct values, the rest copies of them
        m = n // 3
        x = list(range(m)) + draw(st.lists(st.integers(0, m - 1), min_size=n - m, max_size=n - m))
        x = [x[i] for i in order]
    else:
        x = list(range(n))
    return pd.DataFrame({"x": x, "y": y[list(order)]}, index=pd.RangeIndex(n) * 3 + 7)


@st.composite
def fraction_triples(draw, n_rows=20, n_classes=2):
    "Valid (train, valid, test) fractions, with valid and test big enough to hold every class twice."
    lo = max(0.15, 2 * n_classes / n_rows)
    valid, test = draw(st.floats(lo, 0.3)), draw(st.floats(lo, 0.3))
    return 1 - valid - test, valid, test


@st.composite
def frames_and_fractions(draw, duplicates=False):
    df = draw(labelled_frames(duplicates))
    return df, draw(fraction_triples(len(df), df["y"].nunique()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=frames_and_fractions(), seed=st.integers(0, 2**32 - 1))
def test_split_partitions_exactly_with_sizes_near_fractions(data, seed):
    df, fractions = data
    assert abs(sum(fractions) - 1) < 1e-9
    s = split(df, "y", fractions, seed=seed)
    idx = [list(p.index) for p in s]
    allidx = idx[0] + idx[1] + idx[2]
    assert len(allidx) == len(set(allidx)) == len(df)  # no loss, no overlap
    assert set(allidx) == set(df.index)
    for p in s:
        pd.testing.assert_frame_equal(p, df.loc[p.index])  # rows come back unchanged
    for p, f in zip(s, fractions):
        assert abs(len(p) - f * len(df)) <= 2.5, (s.sizes(), fractions)
    # stratified: every class is in the training split
    assert set(s.train["y"]) == set(df["y"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=frames_and_fractions(duplicates=True), seed=st.integers(0, 1000), stratify=st.booleans())
def test_split_with_duplicates_partitions_without_leakage(data, seed, stratify):
    df, fractions = data
    try:
        s = split(df, "y", fractions, seed=seed, stratify=stratify)
    except DataError as e:  # merged copies can leave a class too small to stratify: allowed, if said so
        assert stratify and "Cannot stratify" in str(e)
        return
    allidx = [i for p in s for i in p.index]
    assert len(allidx) == len(set(allidx)) == len(df)
    assert check_leakage(s, "y")["rows"] == 0
    xs = [set(p["x"]) for p in s]
    assert not (xs[0] & xs[1]) and not (xs[0] & xs[2]) and not (xs[1] & xs[2])


# ------------------------------------------------------------------------------------------- Preprocessor

def X(part: pd.DataFrame) -> pd.DataFrame:
    "A split's features as the Preprocessor takes them: everything but the target (ids stay; `drop` skips them)."
    return part.drop(columns="species")


def _sklearn_oracle(pre: Preprocessor, train: pd.DataFrame) -> ColumnTransformer:
    ct = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), pre.numeric_),
        ("cat", OneHotEncoder(handle_unknown="error", sparse_output=False), pre.categorical_),
    ])
    return ct.fit(train)


def test_preprocessor_matches_sklearn_column_transformer(psplits, fitted):
    assert fitted.numeric_ == ["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_g",
                               "delta_15n", "delta_13c"]
    assert fitted.categorical_ == ["island", "clutch_completion", "sex"]
    assert psplits.test[fitted.numeric_].isna().any().any() or psplits.valid[fitted.numeric_].isna().any().any() \
        or psplits.train[fitted.numeric_].isna().any().any()  # imputation is exercised
    ct = _sklearn_oracle(fitted, X(psplits.train))
    ohe = ct.named_transformers_["cat"]
    names = list(fitted.numeric_) + [f"{c}={v}" for c, cats in zip(fitted.categorical_, ohe.categories_) for v in cats]
    assert len(names) == len(ct.get_feature_names_out())
    assert names == list(fitted.get_feature_names_out())
    for part in psplits:
        ours = fitted.transform(X(part))
        assert ours.dtype == np.float32 and ours.shape == (len(part), len(names))
        np.testing.assert_allclose(ours, ct.transform(X(part)), rtol=1e-5, atol=1e-5)


def test_check_estimator_passes_every_check():
    "scikit-learn's own estimator checks: all pass but the array-API one, which scikit-learn skips unless asked."
    import warnings
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(Preprocessor(), on_fail=None)
    status = {r["check_name"]: r["status"] for r in results}
    assert len(status) >= 40
    assert {n for n, st_ in status.items() if st_ != "passed"} == {"check_array_api_input"}, status
    assert status["check_array_api_input"] == "skipped"


def test_pipeline_cross_val_score_and_grid_search(psplits):
    "It sits in a Pipeline: cross-validation and grid search refit it inside every fold."
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import Pipeline
    dev = pd.concat([psplits.train, psplits.valid])
    pipe = Pipeline([("prep", Preprocessor(drop=PENGUIN_DROP)), ("model", LogisticRegression(max_iter=2000))])
    scores = cross_val_score(pipe, X(dev), dev.species, cv=4)
    assert len(scores) == 4 and scores.mean() > 0.9
    grid = GridSearchCV(pipe, {"prep__scale": [True, False], "model__C": [0.1, 1.0]}, cv=3).fit(X(dev), dev.species)
    assert set(grid.best_params_) == {"prep__scale", "model__C"} and grid.score(X(psplits.test), psplits.test.species) > 0.9


def test_arrays_work_and_are_named_like_sklearn():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 3))
    A[4, 1] = np.nan
    pre = Preprocessor().fit(A)
    assert pre.n_features_in_ == 3 and not hasattr(pre, "feature_names_in_")
    assert list(pre.get_feature_names_out()) == ["x0", "x1", "x2"]
    out = pre.transform(A)
    np.testing.assert_allclose(out, StandardScaler().fit_transform(SimpleImputer(strategy="median").fit_transform(A)),
                               atol=1e-5)
    with pytest.raises(ValueError, match="X has 2 features, but Preprocessor is expecting 3 features"):
        pre.transform(A[:, :2])
    with pytest.raises(DataError, match="Reshape your data"):
        pre.transform(A[:, 0])
    with pytest.raises(DataError, match="sparse input is not supported"):
        from scipy.sparse import csr_matrix
        pre.fit(csr_matrix(A))


def test_set_output_pandas_keeps_feature_names(psplits, fitted):
    pre = Preprocessor(drop=PENGUIN_DROP).set_output(transform="pandas").fit(X(psplits.train))
    out = pre.transform(X(psplits.test))
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(fitted.get_feature_names_out())


def test_target_classes_and_regression(psplits):
    t = Target().fit(psplits.train.species)
    assert t.task_ == "classification" and t.classes_ == ["Adelie", "Chinstrap", "Gentoo"]
    y = t.transform(psplits.test.species)
    assert y.dtype == np.int64 and [t.classes_[i] for i in y] == list(psplits.test.species)
    r = Target().fit(psplits.train.body_mass_g)
    assert r.task_ == "regression" and r.classes_ is None
    np.testing.assert_allclose(r.transform(psplits.valid.body_mass_g), psplits.valid.body_mass_g.to_numpy(np.float32))
    assert Target("classification").fit([1, 2, 1]).classes_ == ["1", "2"]


def test_target_refuses_one_class_unseen_classes_and_gaps(psplits):
    with pytest.raises(DataError, match="single class 'Gentoo'"):
        Target().fit(psplits.train.species[psplits.train.species == "Gentoo"])
    t = Target().fit(psplits.train.species)
    bad = psplits.test.species.copy()
    bad.iloc[0] = "Emperor"
    with pytest.raises(DataError, match=rf"species: classes \['Emperor'\] in rows \[{bad.index[0]}\]"):
        t.transform(bad)
    with pytest.raises(DataError, match="missing values"):
        Target().fit(pd.Series(["a", None, "b"], name="y"))
    with pytest.raises(DataError, match="task='ranking'"):
        Target("ranking").fit(["a", "b"])


def test_fit_returns_self_and_sets_only_underscored_attributes(psplits):
    pre = Preprocessor(drop=PENGUIN_DROP)
    before = dict(vars(pre))
    with pytest.raises(NotFittedError):
        check_is_fitted(pre)
    assert pre.fit(X(psplits.train)) is pre
    check_is_fitted(pre)
    new = set(vars(pre)) - set(before)
    assert new and all(k.endswith("_") and not k.startswith("_") for k in new), new
    assert {k: vars(pre)[k] for k in before} == before  # parameters untouched by fit


def test_sklearn_clone(fitted, psplits):
    c = clone(fitted)
    assert c is not fitted and c.get_params() == fitted.get_params()
    assert not hasattr(c, "feature_names_out_")
    with pytest.raises(NotFittedError, match="not fitted"):
        c.transform(X(psplits.test))
    np.testing.assert_array_equal(c.fit(X(psplits.train)).transform(X(psplits.test)), fitted.transform(X(psplits.test)))


def test_fit_transform(psplits, fitted):
    out = Preprocessor(drop=PENGUIN_DROP).fit_transform(X(psplits.train))
    np.testing.assert_array_equal(out, fitted.transform(X(psplits.train)))


def test_save_load_round_trip(tmp_path, psplits, fitted):
    p = fitted.save(tmp_path / "pre.json")
    back = Preprocessor.load(p)
    assert back.get_params() == fitted.get_params()
    for part in psplits:
        np.testing.assert_array_equal(back.transform(X(part)), fitted.transform(X(part)))
    assert list(back.get_feature_names_out()) == list(fitted.get_feature_names_out())
    assert list(back.feature_names_in_) == list(fitted.feature_names_in_) and back.n_features_in_ == fitted.n_features_in_


def test_a_file_saved_before_the_target_had_its_own_encoder_still_loads(tmp_path, psplits, fitted):
    "Preprocessors saved by earlier versions held `target`, `task`, `classes_` and `task_`; bundles carry such files."
    d = fitted.to_dict()
    d["params"].update(target="species", task="auto")
    d["fitted"].update(classes_=["Adelie", "Chinstrap", "Gentoo"], task_="classification")
    for k in ("n_features_in_", "feature_names_in_"):
        d["fitted"].pop(k)
    (tmp_path / "old.json").write_text(json.dumps(d))
    old = Preprocessor.load(tmp_path / "old.json")
    np.testing.assert_array_equal(old.transform(old.select(psplits.test)), fitted.transform(X(psplits.test)))


def test_save_load_round_trip_unknown_other(tmp_path, psplits):
    pre = Preprocessor(drop=PENGUIN_DROP, unknown="other", scale=False).fit(X(psplits.train))
    back = Preprocessor.load(pre.save(tmp_path / "p.json"))
    odd = X(psplits.test).copy()
    odd.iloc[0, odd.columns.get_loc("island")] = "Atlantis"
    np.testing.assert_array_equal(back.transform(odd), pre.transform(odd))


def test_saved_file_is_plain_json_and_loading_never_unpickles(tmp_path, psplits, fitted, monkeypatch):
    p = fitted.save(tmp_path / "pre.json")
    raw = p.read_bytes()
    doc = json.loads(raw.decode("utf-8"))  # the whole file is JSON...
    assert set(doc) == {"params", "fitted"}
    assert b"\x80" not in raw and b"pickle" not in raw.lower()  # ...with no pickle inside

    def boom(*a, **k):
        raise AssertionError("pickle used while loading a Preprocessor")
    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)
    back = Preprocessor.load(p)
    np.testing.assert_array_equal(back.transform(X(psplits.test)), fitted.transform(X(psplits.test)))


@pytest.mark.parametrize("content, match", [
    (b"{\"params\": ", "not valid JSON"),
    (b"{\"a\": 1}", "Not a saved Preprocessor"),
    (b"[1, 2, 3]", "Not a saved Preprocessor"),
    (b"{\"params\": {\"bogus\": 1}, \"fitted\": {}}", "Not a saved Preprocessor"),
    (b"{\"params\": {}, \"fitted\": {}}", "Not a saved Preprocessor"),
])
def test_load_rejects_files_that_are_not_saved_preprocessors(tmp_path, content, match):
    p = tmp_path / "x.json"
    p.write_bytes(content)
    with pytest.raises(DataError, match=match):
        Preprocessor.load(p)


def test_load_binary_file_raises_dataerror(tmp_path):
    "A pickle (or any binary file) where a saved Preprocessor should be is bad input, not a crash."
    p = tmp_path / "pre.json"
    p.write_bytes(pickle.dumps({"params": {}, "fitted": {}}))
    with pytest.raises(DataError, match="pre.json"):
        Preprocessor.load(p)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="gone.json"):
        Preprocessor.load(tmp_path / "gone.json")


def test_transform_missing_column(psplits, fitted):
    with pytest.raises(ValueError, match=r"missing:\n- island"):
        fitted.transform(X(psplits.test).drop(columns="island"))


def test_transform_extra_column_named(psplits, fitted):
    with pytest.raises(ValueError, match=r"unseen at fit time:\n- colour"):
        fitted.transform(X(psplits.test).assign(colour="blue"))


def test_select_takes_the_features_from_wider_rows_and_names_a_missing_one(psplits, fitted):
    "Rows with the target, extra fields and another column order: select gives transform exactly its columns."
    wide = psplits.test.assign(colour="blue")[::-1].iloc[::-1]
    wide = wide[list(reversed(wide.columns))]
    np.testing.assert_array_equal(fitted.transform(fitted.select(wide)), fitted.transform(X(psplits.test)))
    with pytest.raises(DataError, match=r"lack the feature\(s\) \['island'\]"):
        fitted.select(psplits.test.drop(columns="island"))


def test_numeric_column_holding_text_names_column_and_row(psplits, fitted):
    bad = X(psplits.test).copy()
    bad["body_mass_g"] = bad["body_mass_g"].astype(object)
    row = bad.index[3]
    bad.loc[row, "body_mass_g"] = "heavy"
    with pytest.raises(DataError, match="'body_mass_g'") as e:
        fitted.transform(bad)
    assert f"row {row} holds 'heavy'" in str(e.value)  # the row label as the user wrote it, not a NumPy repr


def test_infinity_in_a_numeric_column_is_refused_by_row(psplits, fitted):
    bad = X(psplits.test).copy()
    bad.loc[bad.index[1], "culmen_depth_mm"] = np.inf
    with pytest.raises(DataError, match=rf"'culmen_depth_mm' holds infinity in rows \[{bad.index[1]}\]"):
        fitted.transform(bad)


def test_all_nan_column_at_fit(psplits):
    train = X(psplits.train).assign(delta_15n=np.nan)
    with pytest.raises(DataError, match=r"\['delta_15n'\] are entirely missing"):
        Preprocessor(drop=PENGUIN_DROP).fit(train)


def test_unseen_category_error_names_column_value_row(psplits, fitted):
    bad = X(psplits.test).copy()
    row = bad.index[2]
    bad.loc[row, "island"] = "Atlantis"
    with pytest.raises(DataError, match=rf"'island'.*'Atlantis'.*rows \[{row}\]"):
        fitted.transform(bad)


def test_unseen_category_other_goes_to_other_feature(psplits):
    pre = Preprocessor(drop=PENGUIN_DROP, unknown="other").fit(X(psplits.train))
    names = list(pre.get_feature_names_out())
    assert "island=<other>" in names and "sex=<other>" in names
    bad = X(psplits.test).copy()
    row = 2
    bad.iloc[row, bad.columns.get_loc("island")] = "Atlantis"
    out = pre.transform(bad)
    island = [i for i, n in enumerate(names) if n.startswith("island=")]
    block = out[:, island]
    np.testing.assert_array_equal(block.sum(axis=1), np.ones(len(bad)))  # never all zeros
    assert out[row, names.index("island=<other>")] == 1.0
    assert out[:, names.index("island=<other>")].sum() == 1.0  # only the unseen row
    keep = np.arange(len(bad)) != row  # the known rows encode exactly as before
    np.testing.assert_array_equal(out[keep], pre.transform(X(psplits.test))[keep])


def test_bad_unknown_option(psplits):
    with pytest.raises(DataError, match="unknown='ignore'"):
        Preprocessor(drop=PENGUIN_DROP, unknown="ignore").fit(X(psplits.train))


def test_transform_before_fit():
    with pytest.raises(NotFittedError, match="not fitted"):
        Preprocessor().transform(pd.DataFrame({"a": [1.0]}))


def test_date_column_not_dropped(psplits):
    assert pd.api.types.is_datetime64_any_dtype(psplits.train["date_egg"])
    drop = [c for c in PENGUIN_DROP if c != "date_egg"]
    with pytest.raises(DataError, match="date_egg") as e:
        Preprocessor(drop=drop).fit(X(psplits.train))
    assert "drop=" in str(e.value)
    # listing it as a categorical feature is refused too, with the reason
    with pytest.raises(DataError, match=r"date columns \['date_egg'\]"):
        Preprocessor(drop=drop, categorical=["island", "date_egg"]).fit(X(psplits.train))


def test_from_splits_names_a_missing_target(psplits):
    from trainkit.datasets import from_splits
    with pytest.raises(DataError, match="target column 'kind'"):
        from_splits(psplits, "kind", drop=PENGUIN_DROP)


# ---------------------------------------------------------------------------------------------- datasets

@pytest.fixture(scope="module")
def all_datasets(tmp_path_factory):
    import os
    # module scope runs before the autouse fixture: keep the course database out of $HOME ourselves
    old = {k: os.environ.get(k) for k in ("TRAINKIT_DATA", "TRAINKIT_ARTIFACTS")}
    root = tmp_path_factory.mktemp("datasets")
    os.environ["TRAINKIT_DATA"], os.environ["TRAINKIT_ARTIFACTS"] = str(root / "data"), str(root / "art")
    try:
        return {n: load_datasets(n) for n in ("penguins", "digits", "breast_cancer", "diabetes", "sunspots")}
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


EXPECTED = {  # name: (rows in all, input shape, classes, kind)
    "penguins": (342, (14,), 3, "tabular"),
    "digits": (1797, (1, 8, 8), 10, "image"),
    "breast_cancer": (569, (30,), 2, "tabular"),
    "diabetes": (442, (10,), 0, "tabular"),
    "sunspots": (309 - 24, (24, 1), 0, "sequence"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_load_datasets_shapes_and_types(all_datasets, name):
    ds = all_datasets[name]
    rows, shape, n_classes, kind = EXPECTED[name]
    assert isinstance(ds, Datasets) and ds.name == name and ds.kind == kind
    assert ds.input_shape == shape and ds.n_classes == n_classes
    total = 0
    for split_name, X, y in ds.splits():
        assert X.dtype == torch.float32 and torch.isfinite(X).all(), split_name
        assert X.shape[1:] == shape and len(X) == len(y) > 0
        if n_classes:
            assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < n_classes
        else:
            assert y.dtype == torch.float32 and torch.isfinite(y).all()
        total += len(X)
    assert total == rows
    assert abs(len(ds.X_train) / rows - 0.7) < 0.03
    assert ds.task == ("classification" if n_classes else "regression")


def test_digits_pixels_in_unit_range(all_datasets):
    X = all_datasets["digits"].X_train
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0


def test_sunspots_splits_are_chronological(all_datasets):
    from statsmodels.datasets import sunspots
    s = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)
    n_train = int(len(s) * 0.7)
    z = ((s - s[:n_train].mean()) / s[:n_train].std()).astype(np.float32)
    ds = all_datasets["sunspots"]
    y = torch.cat([ds.y_train, ds.y_valid, ds.y_test]).numpy()
    np.testing.assert_allclose(y, z[24:], rtol=1e-6, atol=1e-6)  # every year, in order, none shuffled
    X = torch.cat([ds.X_train, ds.X_valid, ds.X_test]).numpy()[..., 0]
    for i in (0, len(ds.X_train), len(X) - 1):
        np.testing.assert_allclose(X[i], z[i:i + 24], rtol=1e-6, atol=1e-6)
    # windows of the next split start right after the previous split's targets
    np.testing.assert_allclose(ds.X_valid[0, -1, 0].item(), ds.y_train[-1].item(), rtol=1e-6)
    assert len(ds.X_train) == n_train - 24


def test_datasets_to_and_describe(all_datasets):
    ds = all_datasets["penguins"]
    moved = ds.to("cpu")
    assert moved is not ds and moved.X_train.device.type == "cpu"
    assert torch.equal(moved.X_test, ds.X_test) and moved.classes == ds.classes
    assert moved.preprocessor is ds.preprocessor
    d = ds.describe()
    assert list(d.index) == ["train", "valid", "test"]
    assert d["rows"].tolist() == [len(ds.X_train), len(ds.X_valid), len(ds.X_test)]
    assert set(ds.classes) <= set(d.columns) and d.loc["train", "dtype"] == "float32"
    reg = all_datasets["diabetes"].describe()
    assert {"y mean", "y std"} <= set(reg.columns)
    assert reg.loc["valid", "y mean"] == round(float(all_datasets["diabetes"].y_valid.mean()), 3)


def test_load_datasets_unknown_name_and_bad_window():
    with pytest.raises(DataError, match="'mnist'"):
        load_datasets("mnist")
    with pytest.raises(DataError, match="window=500"):
        load_datasets("sunspots", window=500)
