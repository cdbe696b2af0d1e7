"""Tests for trainkit.label: the Labeler's logic (headless and through its widget), rules and agreement."""
from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

import trainkit.label as label_mod
from trainkit.core import DataError
from trainkit.data import build_database, from_sqlite
from trainkit.label import Labeler, label_agreement, read_labels, rule_labels

LABELS = ["adult", "chick", "unsure"]


@pytest.fixture(scope="session")
def _built_db(tmp_path_factory):
    "One course database per session; tests work on copies of it."
    return build_database(tmp_path_factory.mktemp("labeldb") / "penguins.sqlite")


@pytest.fixture
def db(_built_db, tmp_path):
    p = tmp_path / "copy.sqlite"
    shutil.copy(_built_db, p)
    return p


@pytest.fixture
def records(db):
    "Six raw records; the default RangeIndex makes the record ids '0'..'5'."
    return from_sqlite(db).head(6)


def saved(db, task="t", labeler=None) -> dict:
    "The saved labels as {record_id: label}."
    df = read_labels(db, task, labeler)
    return dict(zip(df.record_id, df.label))


def make(records, db, **kw):
    kw = {"task": "t", "autosave": 0, **kw}
    return Labeler(records, LABELS, db, **kw)


# ----------------------------------------------------------------------------------------------- basic logic

def test_label_moves_to_next_record_and_counts_progress(records, db):
    lab = make(records, db, show=["Species", "Island"])
    assert lab.pos == 0 and lab.progress() == (0, 6) and not lab.finished
    cur = lab.current()
    assert list(cur.index) == ["Species", "Island"]
    assert cur["Island"] == records.iloc[0]["Island"]
    assert lab.label("adult") is lab
    assert lab.pos == 1 and lab.progress() == (1, 6)
    assert lab.done == {"0": "adult"}
    assert lab.current()["Species"] == records.iloc[1]["Species"]


def test_show_defaults_to_every_column(records, db):
    assert list(make(records, db).current().index) == list(records.columns)


def test_skip_leaves_record_unlabeled(records, db):
    lab = make(records, db)
    lab.skip().label("chick")
    assert lab.done == {"1": "chick"}
    assert lab.progress() == (1, 6) and lab.pos == 2


def test_undo_label_returns_to_record_and_forgets_label(records, db):
    lab = make(records, db)
    lab.label("adult").label("chick")
    lab.undo()
    assert lab.pos == 1 and lab.done == {"0": "adult"} and lab.progress() == (1, 6)
    lab.label("unsure")
    assert lab.done == {"0": "adult", "1": "unsure"}


def test_undo_skip_returns_to_skipped_record(records, db):
    lab = make(records, db)
    lab.label("adult").skip().skip()
    assert lab.pos == 3
    lab.undo()
    assert lab.pos == 2 and lab.done == {"0": "adult"}
    lab.undo()
    assert lab.pos == 1
    lab.undo()
    assert lab.pos == 0 and lab.done == {}


def test_undo_with_empty_history_is_a_no_op(records, db):
    lab = make(records, db)
    assert lab.undo() is lab and lab.pos == 0 and lab.done == {}


def test_save_writes_labels_and_returns_count(records, db):
    lab = make(records, db, labeler="ann")
    lab.label("adult").skip().label("chick")
    assert saved(db) == {}  # nothing written before save (autosave off)
    assert lab.save() == 2
    assert saved(db, labeler="ann") == {"0": "adult", "2": "chick"}
    assert lab.save() == 0  # nothing new
    df = read_labels(db, "t")
    assert list(df.columns) == ["task", "record_id", "labeler", "label", "saved_at"]
    assert set(df.task) == {"t"} and set(df.labeler) == {"ann"}


def test_labels_are_kept_apart_per_task_and_labeler(records, db):
    make(records, db, labeler="ann").label("adult").save()
    make(records, db, labeler="bob").label("chick").save()
    make(records, db, task="other", labeler="ann").label("unsure").save()
    assert saved(db, "t", "ann") == {"0": "adult"}
    assert saved(db, "t", "bob") == {"0": "chick"}
    assert saved(db, "other", "ann") == {"0": "unsure"}
    assert len(read_labels(db, "t")) == 2


def test_resume_starts_at_first_unlabeled_and_sees_saved_labels(records, db):
    lab = make(records, db, labeler="ann")
    lab.label("adult").skip().label("chick").label("adult")  # 0, 2, 3 labeled; 1 skipped
    lab.save()
    again = make(records, db, labeler="ann")
    assert again.done == {"0": "adult", "2": "chick", "3": "adult"}
    assert again.pos == 1 and again.progress() == (3, 6)
    assert again.current()["Sample Number"] == records.iloc[1]["Sample Number"]
    again.label("unsure")
    assert again.pos == 4  # jumps over the records labeled earlier
    # someone else on the same task starts from scratch
    assert make(records, db, labeler="bob").pos == 0


def test_resume_when_everything_is_labeled(records, db):
    lab = make(records, db)
    for _ in range(6):
        lab.label("adult")
    lab.save()
    again = make(records, db)
    assert again.finished and again.current() is None and again.progress() == (6, 6)


def test_undo_after_save_deletes_on_next_save(records, db):
    lab = make(records, db)
    lab.label("adult").label("chick")
    lab.save()
    lab.undo()
    assert saved(db) == {"0": "adult", "1": "chick"}  # not yet
    assert lab.save() == 1
    assert saved(db) == {"0": "adult"}
    assert make(records, db).pos == 1


def test_relabel_after_undo_of_saved_label_replaces_it(records, db):
    lab = make(records, db)
    lab.label("adult").save()
    lab.undo().label("chick")
    assert lab.save() == 1
    assert saved(db) == {"0": "chick"}
    assert len(read_labels(db, "t")) == 1


def test_autosave_after_n_labels(records, db):
    lab = make(records, db, autosave=3)
    lab.label("adult").label("chick")
    assert saved(db) == {}
    lab.label("unsure")
    assert saved(db) == {"0": "adult", "1": "chick", "2": "unsure"}
    lab.label("adult")
    assert len(saved(db)) == 3  # the counter restarted after the save


def test_autosave_zero_never_saves_by_itself(records, db):
    lab = make(records, db, autosave=0)
    for _ in range(6):
        lab.label("adult")
    assert saved(db) == {}


def test_labeling_when_finished_raises(records, db):
    lab = make(records, db)
    for _ in range(6):
        lab.label("chick")
    assert lab.finished and lab.current() is None
    with pytest.raises(DataError, match="labeled"):
        lab.label("chick")
    assert lab.skip() is lab and lab.finished  # skipping at the end is harmless


def test_invalid_label_raises_and_changes_nothing(records, db):
    lab = make(records, db)
    with pytest.raises(DataError, match="'kitten'"):
        lab.label("kitten")
    assert lab.pos == 0 and lab.done == {} and lab.history == []


@pytest.mark.parametrize("labels, match", [
    (["only"], "two distinct labels"),
    ([], "two distinct labels"),
    (["a", "b", "a"], "two distinct labels"),
])
def test_bad_labels_rejected(records, db, labels, match):
    with pytest.raises(DataError, match=match):
        Labeler(records, labels, db, "t")


def test_empty_records_rejected(records, db):
    with pytest.raises(DataError, match="no records"):
        Labeler(records.iloc[:0], LABELS, db, "t")


def test_non_unique_index_rejected(records, db):
    dup = records.set_index(pd.Index([0, 1, 2, 2, 3, 4]))
    with pytest.raises(DataError, match="unique"):
        Labeler(dup, LABELS, db, "t")


def test_missing_db_raises_naming_the_file(records, tmp_path):
    missing = tmp_path / "nowhere.sqlite"
    with pytest.raises(DataError, match="nowhere.sqlite"):
        Labeler(records, LABELS, missing, "t")
    with pytest.raises(DataError, match="nowhere.sqlite"):
        read_labels(missing, "t")
    assert not missing.exists()  # no empty database was created by accident


# --------------------------------------------------------------------------------- save is one transaction

class _FailingDelete:
    "A sqlite3 connection whose executemany fails on the DELETE statement."

    def __init__(self, con):
        self._con = con

    def __getattr__(self, name):
        return getattr(self._con, name)

    def __enter__(self):
        self._con.__enter__()
        return self

    def __exit__(self, *exc):
        return self._con.__exit__(*exc)

    def executemany(self, sql, rows):
        if sql.lstrip().upper().startswith("DELETE"):
            raise sqlite3.OperationalError("disk I/O error (injected by the test)")
        return self._con.executemany(sql, rows)


def test_save_is_all_or_nothing_and_can_be_retried(records, db, monkeypatch):
    lab = make(records, db)
    lab.label("adult").label("adult")
    lab.save()  # 0, 1 saved
    lab.undo()  # 1 to delete
    lab.skip().label("chick")  # 2 to insert
    real = label_mod._connect
    monkeypatch.setattr(label_mod, "_connect", lambda path: _FailingDelete(real(path)))
    with pytest.raises(sqlite3.OperationalError, match="injected"):
        lab.save()
    monkeypatch.setattr(label_mod, "_connect", real)
    # the INSERT that ran before the failing DELETE was rolled back
    assert saved(db) == {"0": "adult", "1": "adult"}
    assert lab._dirty == {"2"} and lab._deleted == {"1"}
    assert lab.save() == 2
    assert saved(db) == {"0": "adult", "2": "chick"}


# ----------------------------------------------------------------------------------------------- the widget

def _parts(box):
    view, buttons, tools, bar, status = box.children
    return view, bar, status


def test_widget_buttons_label_skip_undo_save(records, db):
    lab = make(records, db)
    box = lab.widget()
    view, bar, status = _parts(box)
    assert set(box.buttons) == set(LABELS) | {"Skip", "Undo", "Save"}
    assert bar.max == 6 and bar.value == 0
    assert status.value == "0/6 labeled; 0 unsaved"
    assert str(records.iloc[0]["Individual ID"]) in view.value

    box.buttons["adult"].click()
    assert lab.done == {"0": "adult"}
    assert bar.value == 1 and status.value == "1/6 labeled; 1 unsaved"
    assert str(records.iloc[1]["Individual ID"]) in view.value

    box.buttons["Skip"].click()
    box.buttons["chick"].click()
    assert lab.done == {"0": "adult", "2": "chick"} and status.value == "2/6 labeled; 2 unsaved"

    box.buttons["Undo"].click()
    assert lab.done == {"0": "adult"} and lab.pos == 2 and bar.value == 1

    box.buttons["Save"].click()
    assert status.value == "1/6 labeled; 0 unsaved"
    assert saved(db) == {"0": "adult"}


def test_widget_shows_end_and_reports_errors_in_status(records, db):
    lab = make(records, db)
    box = lab.widget()
    view, bar, status = _parts(box)
    for _ in range(6):
        box.buttons["unsure"].click()
    assert "All records labeled" in view.value and bar.value == 6
    assert status.value == "6/6 labeled; 6 unsaved"
    box.buttons["unsure"].click()  # nothing left: the error shows, nothing raises
    assert "nothing to label" in status.value
    box.buttons["Save"].click()
    assert len(saved(db)) == 6 and status.value == "6/6 labeled; 0 unsaved"


def test_widget_undo_after_save_deletes_on_save(records, db):
    lab = make(records, db)
    box = lab.widget()
    box.buttons["adult"].click()
    box.buttons["Save"].click()
    box.buttons["Undo"].click()
    assert _parts(box)[2].value == "0/6 labeled; 1 unsaved"
    box.buttons["Save"].click()
    assert saved(db) == {}


# --------------------------------------------------------------------------------------------- rule labels

def test_rule_labels_first_match_wins_and_default():
    texts = pd.Series(["Nest with 2 EGGS", "chick hatched", "egg and chick", "nothing here", None, 42.0],
                      index=list("abcdef"))
    out = rule_labels(texts, [("egg", r"\beggs?\b"), ("chick", "chick")], default="none")
    assert out.name == "label"
    assert list(out.index) == list("abcdef")
    assert out.to_dict() == {"a": "egg", "b": "chick", "c": "egg", "d": "none", "e": "none", "f": "none"}
    # rule order matters
    swapped = rule_labels(texts, [("chick", "chick"), ("egg", r"\beggs?\b")], default="none")
    assert swapped["c"] == "chick"


def test_rule_labels_default_is_other():
    assert rule_labels(pd.Series(["x"]), [("y", "y")]).tolist() == ["other"]


def test_rule_labels_invalid_regex_names_the_label():
    with pytest.raises(DataError, match="'broken'"):
        rule_labels(pd.Series(["x"]), [("fine", "x"), ("broken", "(unclosed")])


# ------------------------------------------------------------------------------------------ label agreement

def test_label_agreement_matches_sklearn_kappa():
    rng = np.random.default_rng(0)
    idx = [f"r{i}" for i in range(60)]
    a = pd.Series(rng.choice(["x", "y", "z"], 60), index=idx)
    b = a.copy()
    flip = rng.random(60) < 0.3
    b[flip] = rng.choice(["x", "y", "z"], flip.sum())
    b = b.iloc[10:]  # b labeled only 50 of the records
    a = a.copy()
    a.iloc[20] = np.nan  # a missing label is not compared
    out = label_agreement(a, b)
    common = [i for i in idx[10:] if i != idx[20]]
    assert out["n"] == len(common) == 49
    assert out["agreement"] == pytest.approx(float((a[common] == b[common]).mean()))
    assert out["kappa"] == pytest.approx(cohen_kappa_score(a[common], b[common]))
    dis = out["disagreements"]
    assert set(dis.index) == {i for i in common if a[i] != b[i]}
    assert (dis["a"] != dis["b"]).all()


def test_label_agreement_perfect():
    a = pd.Series(["x", "y", "x", "z"], index=[1, 2, 3, 4])
    out = label_agreement(a, a.sample(frac=1, random_state=0))  # order does not matter, the index does
    assert out["n"] == 4 and out["agreement"] == 1.0 and out["kappa"] == pytest.approx(1.0)
    assert len(out["disagreements"]) == 0
    one = pd.Series(["x", "x"], index=[1, 2])  # a single class everywhere: still perfect
    assert label_agreement(one, one)["kappa"] == 1.0


def test_label_agreement_no_overlap_raises():
    with pytest.raises(DataError, match="share no records"):
        label_agreement(pd.Series(["x"], index=[1]), pd.Series(["x"], index=[2]))
