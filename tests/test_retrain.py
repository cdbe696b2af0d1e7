"""Tests for trainkit.retrain: the drift gate, the fair comparison, the promotion rule, the lineage check, the command."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from trainkit.cli import main
from trainkit.core import DataError
from trainkit.data import from_csv, penguins_csv
from trainkit.prep import check_leakage, split
from trainkit.registry import Registry
from trainkit import retrain as rt
from trainkit.retrain import (Decision, ServedOnRows, combined_splits, cross_entropy, decide, drift_report, grown_splits,
                              read_records, retrain)


@pytest.fixture(scope="module")
def seasons(tmp_path_factory):
    "Three seasons of birds (40/30/30% of them) as raw CSVs, a heavy-scales batch, and a quick served v1 (a registry)."
    root = tmp_path_factory.mktemp("seasons")
    raw = from_csv(penguins_csv())
    birds = np.array(sorted(raw["Individual ID"].unique()))
    np.random.default_rng(0).shuffle(birds)
    parts = np.split(birds, [int(0.4 * len(birds)), int(0.7 * len(birds))])
    frames = dict(zip(("last", "this", "next"), (raw[raw["Individual ID"].isin(b)] for b in parts)))
    frames["heavy"] = frames["this"].assign(**{"Body Mass (g)": frames["this"]["Body Mass (g)"] + 600})
    paths = {k: root / f"{k}.csv" for k in frames}
    for k, df in frames.items():
        df.to_csv(paths[k], index=False)
    (root / "quick.toml").write_text("[tune]\ntrials = 0\n\n[train]\nepochs = 5\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRAINKIT_DATA", str(root / "data"))
        mp.setenv("TRAINKIT_ARTIFACTS", str(root / "artifacts"))
        mp.delenv("TRAINKIT_DEVICE", raising=False)
        assert main(["run", "--config", str(root / "quick.toml"), "--source", str(paths["last"]), "--registry",
                     str(root / "served"), "--out", str(root / "run"), "--quiet"]) == 0
    return {"root": root, "frames": frames, "paths": paths, "served": root / "served"}


@pytest.fixture
def registry(seasons, tmp_path):
    "A fresh copy of the served registry (v1 current), so each test may promote."
    import shutil
    dest = tmp_path / "registry"
    shutil.copytree(seasons["served"], dest)
    return dest


# --------------------------------------------------------------------------------------------- the pieces

def test_cross_entropy_equals_sklearn_log_loss():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(3), size=50)
    y = rng.integers(0, 3, size=50)
    assert cross_entropy(y, P) == pytest.approx(log_loss(y, P, labels=[0, 1, 2]), abs=1e-12)
    assert cross_entropy([0, 1], np.eye(2)) == pytest.approx(0.0, abs=1e-12)  # certain and right
    assert cross_entropy([1], [[1.0, 0.0]]) == pytest.approx(-np.log(1e-15))  # certain and wrong: clipped, finite


def scores(served, candidate):
    "A scores table from {part: (accuracy, cross_entropy)} for each model."
    rows = [(who, part, 10, a, ce) for who, parts in (("served", served), ("candidate", candidate)) for part, (a, ce) in parts.items()]
    return pd.DataFrame(rows, columns=["model", "rows", "n", "accuracy", "cross_entropy"]).set_index(["model", "rows"])


@pytest.mark.parametrize("served, candidate, min_gain, promote, words", [
    ({"all": (0.9, 0.3)}, {"all": (0.8, 0.1)}, 0.0, False, "less accurate"),
    ({"all": (0.9, 0.3)}, {"all": (0.9, 0.3)}, 0.0, False, "not lower"),
    ({"all": (0.9, 0.3)}, {"all": (0.9, 0.25)}, 0.1, False, "by more than 0.1"),
    ({"all": (0.9, 0.3)}, {"all": (0.9, 0.25)}, 0.0, True, "lower cross-entropy"),
    ({"all": (0.9, 0.3)}, {"all": (0.95, 0.29)}, 0.0, True, "0.950 vs 0.900"),
])
def test_decide_follows_the_rule(served, candidate, min_gain, promote, words):
    ok, why = decide(scores(served, candidate), min_gain)
    assert ok is promote and words in why, why


def test_read_records_refuses_what_the_schema_refuses(seasons):
    rows = read_records(seasons["paths"]["last"])
    assert len(rows) > 100 and "body_mass_g" in rows
    bad = seasons["frames"]["heavy"].assign(**{"Body Mass (g)": seasons["frames"]["heavy"]["Body Mass (g)"] + 5000})
    with pytest.raises(DataError, match="(?s)new records fail the penguins schema.*'body_mass_g': in_range"):
        read_records(bad, "new records")
    with pytest.raises(DataError, match="absent.csv"):
        read_records(seasons["root"] / "absent.csv")
    with pytest.raises(DataError, match="no rows left after cleaning"):
        read_records(seasons["frames"]["last"].assign(Species=None), "new records")


def test_drift_report_hears_the_heavy_scales_only(seasons):
    bundle = Registry(seasons["served"]).load()
    heavy = drift_report(bundle, read_records(seasons["paths"]["heavy"]))
    true = drift_report(bundle, read_records(seasons["paths"]["this"]))
    assert heavy["alarm"] and heavy["features"]["body_mass_g"]["drifted"]
    assert not true["alarm"]
    few = drift_report(bundle, read_records(seasons["paths"]["heavy"]).head(30))
    assert few["window"] == 30 and not few["ready"] and not few["alarm"]  # too few to judge


def test_grown_splits_keep_each_bird_in_one_split(seasons):
    last, this = read_records(seasons["paths"]["last"]), read_records(seasons["paths"]["this"])
    one = grown_splits([last], "species", 42)
    for a, b in zip(one, split(last, "species", seed=42, groups="individual_id")):
        pd.testing.assert_frame_equal(a, b)  # the first batch: exactly as `trainkit run` splits it
    again = this.copy()  # the same birds weighed again, under new record keys
    again["sample_number"] += 1000
    two = grown_splits([last, pd.concat([this, last.assign(sample_number=last["sample_number"] + 2000)])], "species", 42)
    assert check_leakage(two, "species", "individual_id")["groups"] == 0
    for i, part in enumerate(one):  # a bird of the first batch stays where it was
        assert set(part["individual_id"]) <= set(two[i]["individual_id"])


def test_combined_splits_lineage_check(seasons):
    bundle = Registry(seasons["served"]).load()
    last, this, heavy = (read_records(seasons["paths"][k]) for k in ("last", "this", "heavy"))
    joined, origin, same = combined_splits(bundle, [last], heavy)
    assert same  # the old rows rebuild the served version's training split: its hash matches
    assert len(origin) == len(joined.test) and set(origin) == {"old", "new"}
    assert check_leakage(joined, "species", "individual_id") == {"rows": 0, "groups": 0}
    assert not combined_splits(bundle, [this], heavy)[2]  # the wrong old records: the hash says so


def test_served_on_rows_checks_its_rows_and_classes(seasons):
    bundle = Registry(seasons["served"]).load()
    rows = read_records(seasons["paths"]["this"])
    served = ServedOnRows(bundle, rows, ["Gentoo", "Adelie", "Chinstrap"])
    P = served.predict(np.zeros((len(rows), 1)))
    assert P.shape == (len(rows), 3) and np.allclose(P.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(P[:, 0], bundle.predict(rows)[:, bundle.classes.index("Gentoo")])  # columns reordered
    with pytest.raises(DataError, match="asked for 3 rows"):
        served.predict(np.zeros((3, 1)))
    with pytest.raises(DataError, match="Emperor"):
        ServedOnRows(bundle, rows, ["Adelie", "Emperor"])


# ------------------------------------------------------------------------------------------- the loop

def test_no_drift_keeps_the_served_version_and_trains_nothing(seasons, registry, monkeypatch):
    monkeypatch.setattr(rt, "train_candidate", lambda *a: pytest.fail("nothing may be trained without an alarm"))
    d = retrain(registry, seasons["paths"]["this"], old=seasons["paths"]["last"])
    assert (d.action, d.version, d.scores, d.served) == ("kept", None, None, "v1")
    assert "no drift alarm" in d.reason and "kept v1" in str(d)
    assert Registry(registry).names() == ["v1"] and Registry(registry).current() == "v1"
    few = retrain(registry, seasons["frames"]["heavy"].head(40), old=seasons["paths"]["last"])
    assert few.action == "kept" and "too few" in few.reason


def test_heavy_scales_retrain_and_follow_the_rule(seasons, registry):
    d = retrain(registry, seasons["paths"]["heavy"], old=seasons["paths"]["last"])
    assert d.drift["alarm"] and d.same_split
    s, c = d.scores.loc[("served", "all")], d.scores.loc[("candidate", "all")]
    better = c.accuracy >= s.accuracy and c.cross_entropy < s.cross_entropy
    assert d.action == ("promoted" if better else "rejected")
    reg = Registry(registry)
    assert reg.current() == (d.version if better else "v1")
    assert reg.names() == (["v1", d.version] if better else ["v1"])  # a rejected candidate is not added
    assert set(d.scores.index.get_level_values("rows")) == {"all", "old", "new"}
    assert d.scores.loc[("served", "all"), "n"] == d.rows["held out old"] + d.rows["held out new"]
    assert d.reports["served"].n == d.reports["candidate"].n  # the same rows for both
    np.testing.assert_array_equal(d.reports["served"].y_true, d.reports["candidate"].y_true)
    assert "drift      alarm: body_mass_g" in str(d)


def test_a_promoted_candidate_records_its_parent_and_the_next_retrain_rebuilds_its_split(seasons, registry, monkeypatch):
    monkeypatch.setattr(rt, "decide", lambda scores, min_gain=0.0: (True, "forced for the test"))
    d = retrain(registry, seasons["paths"]["heavy"], old=seasons["paths"]["last"])
    reg = Registry(registry)
    assert (d.action, d.version, reg.current()) == ("promoted", "v2", "v2")
    assert reg.versions().loc["v2", "parent"] == "v1"
    assert reg.manifest("v2")["metrics"]["source"] == "report:test"  # the comparison's report travels with it
    monkeypatch.undo()
    bills = seasons["frames"]["next"].assign(**{"Culmen Length (mm)": seasons["frames"]["next"]["Culmen Length (mm)"] + 10})
    second = retrain(registry, bills, old=[seasons["paths"]["last"], seasons["paths"]["heavy"]])
    assert second.served == "v2" and second.drift["alarm"] and second.same_split  # generation 2: lineage holds
    wrong = retrain(registry, bills, old=seasons["paths"]["last"], min_gain=10.0)
    assert not wrong.same_split and "warning" in str(wrong)


def test_force_min_gain_and_promote_false(seasons, registry):
    d = retrain(registry, seasons["paths"]["this"], old=seasons["paths"]["last"], force=True, min_gain=10.0)
    assert not d.drift["alarm"] and d.scores is not None  # compared although nothing drifted
    assert d.action == "rejected" and Registry(registry).names() == ["v1"]
    assert "by more than 10" in d.reason or "less accurate" in d.reason  # either way: no promotion
    added = retrain(registry, seasons["paths"]["heavy"], old=seasons["paths"]["last"], min_gain=-1.0, promote=False)
    if added.action == "added":  # as accurate: added but not promoted
        assert Registry(registry).current() == "v1" and added.version in Registry(registry).names()
    else:
        assert added.action == "rejected" and "less accurate" in added.reason


def test_retrain_errors_name_the_problem(seasons, tmp_path):
    with pytest.raises(DataError, match="serves no version yet"):
        retrain(tmp_path / "empty", seasons["paths"]["heavy"])


# -------------------------------------------------------------------------------------------- the command

def test_command_prints_the_decision_and_exits_0(seasons, registry, capsys):
    assert main(["retrain", "--registry", str(registry), "--new", str(seasons["paths"]["this"]),
                 "--old", str(seasons["paths"]["last"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trainkit retrain: served v1,") and "decision   kept v1: no drift alarm" in out


def test_command_repeated_old_and_errors(seasons, registry, capsys, tmp_path):
    rc = main(["retrain", "--registry", str(registry), "--new", str(seasons["paths"]["heavy"]), "--old",
               str(seasons["paths"]["last"]), "--old", str(seasons["paths"]["this"]), "--min-gain", "10"])
    out = capsys.readouterr().out
    assert rc == 0 and "warning    the old records do not rebuild" in out and "rejected the candidate" in out
    rc = main(["retrain", "--registry", str(tmp_path / "none"), "--new", str(seasons["paths"]["heavy"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("trainkit: error: retrain: the registry")
    with pytest.raises(SystemExit):
        main(["retrain", "--registry", str(registry)])  # --new is required
