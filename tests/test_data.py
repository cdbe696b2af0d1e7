"""Tests for trainkit.data (collecting raw records from four sources) and trainkit.core."""
from __future__ import annotations

import os
import random
import shutil
import sqlite3
import stat
import time
import warnings
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import trainkit.core as core
from conftest import typed_csv
from trainkit.core import (DataError, artifacts_dir, atomic_write, data_dir, environment, fast_mode,
                           get_device, pick, seed_everything)
from trainkit.core import DataWarning
from trainkit.data import (RAW_COLUMNS, JSONAPIServer, build_database, collect, conform, from_csv,
                           from_html, from_json_api, from_sqlite, penguins_csv, shipped_html,
                           write_html_table)

N_RAW = 344


# ----------------------------------------------------------------------------- sources

def test_from_csv_has_raw_schema(raw_penguins):
    df = from_csv(penguins_csv())
    assert df.shape == (N_RAW, len(RAW_COLUMNS))
    assert list(df.columns) == list(RAW_COLUMNS)
    assert isinstance(df.index, pd.RangeIndex)
    for col, kind in RAW_COLUMNS.items():
        if kind == "int":
            assert df[col].dtype == "Int64", col
        elif kind == "float":
            assert df[col].dtype == "float64", col
        else:
            assert pd.api.types.is_string_dtype(df[col]) or df[col].dtype == object, col
            assert df[col].dropna().map(type).eq(str).all(), col
    assert df["Species"].str.startswith(("Adelie", "Chinstrap", "Gentoo")).all()
    assert df["Body Mass (g)"].isna().sum() == 2


def test_from_sqlite_matches_csv(tmp_path, raw_penguins):
    db = build_database(tmp_path / "penguins.sqlite")
    assert db == tmp_path / "penguins.sqlite" and db.is_file()
    pd.testing.assert_frame_equal(from_sqlite(db), raw_penguins)


def test_build_database_default_goes_to_data_dir(isolated_dirs, raw_penguins):
    db = build_database()
    assert db == isolated_dirs["data"] / "penguins.sqlite"
    assert db.is_file()
    pd.testing.assert_frame_equal(from_sqlite(), raw_penguins)  # default source is that database


def test_build_database_custom_table_and_csv(tmp_path, small_csv, raw_penguins):
    db = build_database(tmp_path / "small.db", csv=small_csv, table="birds")
    df = from_sqlite(db, table="birds")
    pd.testing.assert_frame_equal(df, raw_penguins.head(12))


def test_from_json_api_matches_csv(raw_penguins):
    with JSONAPIServer(raw_penguins) as api:
        got = from_json_api(api.url)
        assert api.requests == 4  # 344 records, 100 per page
    pd.testing.assert_frame_equal(got, raw_penguins)


def test_from_json_api_retries_then_succeeds(raw_penguins):
    with JSONAPIServer(raw_penguins, fail_first=2) as api:
        got = from_json_api(api.url, retries=3, backoff=0.01)
        assert api.requests == 2 + 4  # two 503s, then the four pages
    pd.testing.assert_frame_equal(got, raw_penguins)


def test_from_json_api_always_failing_names_url_and_status(raw_penguins):
    with JSONAPIServer(raw_penguins, fail_first=10**6) as api:
        with pytest.raises(DataError) as ei:
            from_json_api(api.url, retries=2, backoff=0.01)
        assert api.requests == 3  # the first try and two retries
    msg = str(ei.value)
    assert api.url in msg
    assert "503" in msg


def test_from_json_api_too_few_retries_fails(raw_penguins):
    with JSONAPIServer(raw_penguins, fail_first=3) as api:
        with pytest.raises(DataError, match="503"):
            from_json_api(api.url, retries=2, backoff=0.01)


def test_from_json_api_dead_port_fails_fast(free_port):
    url = f"http://127.0.0.1:{free_port}/records"
    t0 = time.perf_counter()
    with pytest.raises(DataError) as ei:
        from_json_api(url, timeout=0.5, retries=1, backoff=0.01)
    assert time.perf_counter() - t0 < 5
    assert url in str(ei.value)


def test_from_json_api_404_path(raw_penguins):
    with JSONAPIServer(raw_penguins) as api:
        url = api.url.replace("/records", "/no-such-thing")
        with pytest.raises(DataError) as ei:
            from_json_api(url, backoff=0.01)
        assert api.requests == 1  # a 404 is not retried
    assert "404" in str(ei.value) and url in str(ei.value)


def test_from_json_api_bad_query_is_400(raw_penguins):
    with JSONAPIServer(raw_penguins) as api:
        with pytest.raises(DataError, match="400"):
            from_json_api(api.url + "?page=0")


def test_from_json_api_max_pages(raw_penguins):
    with JSONAPIServer(raw_penguins) as api:
        with pytest.raises(DataError, match="max_pages"):
            from_json_api(api.url, max_pages=2)
        assert api.requests == 2


def test_json_api_server_pages(raw_penguins):
    import requests
    with JSONAPIServer(raw_penguins.head(5)) as api:
        body = requests.get(api.url, params={"page": 2, "per_page": 2}, timeout=5).json()
    assert body["page"] == 2 and body["total"] == 5 and len(body["records"]) == 2
    assert body["next"].endswith("page=3&per_page=2")
    assert body["records"][0]["Individual ID"] == raw_penguins.loc[2, "Individual ID"]


def test_from_html_shipped_matches_csv(raw_penguins):
    pd.testing.assert_frame_equal(from_html(shipped_html()), raw_penguins)


def test_from_html_no_matching_table():
    with pytest.raises(DataError, match="no table containing 'Gorman Lab budget'"):
        from_html(shipped_html(), match="Gorman Lab budget")


def test_from_html_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        from_html(tmp_path / "nope.html")


def test_write_html_table_round_trip(tmp_path, raw_penguins, files_in):
    part = raw_penguins.head(20)
    page = write_html_table(part, tmp_path / "page.html")
    assert files_in(tmp_path) == ["page.html"]
    assert "Contacts" in page.read_text(encoding="utf-8")
    pd.testing.assert_frame_equal(from_html(page), part)


def test_all_four_sources_agree(tmp_path, raw_penguins):
    db = build_database(tmp_path / "penguins.sqlite")
    with JSONAPIServer(raw_penguins) as api:
        frames = {"sqlite": from_sqlite(db), "csv": from_csv(penguins_csv()),
                  "api": from_json_api(api.url), "html": from_html(shipped_html())}
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(frame, frames["csv"], obj=name)


# ----------------------------------------------------------------------------- collect()

@pytest.mark.parametrize("name", ["copy.csv", "COPY.CSV", "copy.html", "copy.htm", "copy.sqlite",
                                  "copy.sqlite3", "copy.db"])
def test_collect_dispatches_on_suffix(tmp_path, raw_penguins, name):
    p = tmp_path / name
    suffix = p.suffix.lower()
    if suffix == ".csv":
        shutil.copy(penguins_csv(), p)
    elif suffix in (".html", ".htm"):
        shutil.copy(shipped_html(), p)
    else:
        build_database(p)
    pd.testing.assert_frame_equal(collect(p), raw_penguins)
    pd.testing.assert_frame_equal(collect(str(p)), raw_penguins)


def test_collect_sqlite_table_argument(tmp_path, small_csv, raw_penguins):
    db = build_database(tmp_path / "b.db", csv=small_csv, table="birds")
    pd.testing.assert_frame_equal(collect(db, table="birds"), raw_penguins.head(12))


@pytest.mark.parametrize("source", [None, "", "sqlite", "default"])
def test_collect_default_is_course_database(isolated_dirs, raw_penguins, source):
    pd.testing.assert_frame_equal(collect(source), raw_penguins)
    assert (isolated_dirs["data"] / "penguins.sqlite").is_file()


def test_collect_url(raw_penguins):
    with JSONAPIServer(raw_penguins) as api:
        got = collect(api.url)
    pd.testing.assert_frame_equal(got, raw_penguins)


@pytest.mark.parametrize("source", ["penguins.parquet", "penguins", "data.xlsx"])
def test_collect_unknown_suffix(tmp_path, source):
    with pytest.raises(DataError, match="Cannot tell how to collect") as ei:
        collect(tmp_path / source)
    assert source in str(ei.value)


def test_collect_passes_columns(tmp_path):
    p = tmp_path / "tiny.csv"
    p.write_text("a,b\n1,x\n2,y\n", encoding="utf-8")
    got = collect(p, columns={"a": "int", "b": "str"})
    assert got["a"].tolist() == [1, 2] and got["a"].dtype == "Int64"
    assert got["b"].tolist() == ["x", "y"]


# ----------------------------------------------------------------------------- bad input

def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match="does not exist") as ei:
        from_csv(tmp_path / "nope.csv")
    assert "nope.csv" in str(ei.value)


def test_empty_csv_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="is empty") as ei:
        from_csv(p)
    assert "empty.csv" in str(ei.value)


def test_header_only_csv_has_no_rows(tmp_path):
    p = tmp_path / "header.csv"
    p.write_text(",".join(f'"{c}"' for c in RAW_COLUMNS) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows") as ei:
        from_csv(p)
    assert "header.csv" in str(ei.value)


def test_missing_sqlite_file(tmp_path, files_in):
    db = tmp_path / "nope.sqlite"
    with pytest.raises(DataError, match="does not exist") as ei:
        from_sqlite(db)
    assert "nope.sqlite" in str(ei.value) and "build_database" in str(ei.value)
    assert files_in(tmp_path) == []  # reading must not create the file


def test_missing_table_lists_existing_tables(tmp_path):
    db = build_database(tmp_path / "penguins.sqlite")
    with pytest.raises(DataError, match="no table 'birds'") as ei:
        from_sqlite(db, table="birds")
    assert "penguins_raw" in str(ei.value)


def test_empty_table_has_no_rows(tmp_path, raw_penguins):
    db = tmp_path / "empty.db"
    with closing(sqlite3.connect(db)) as con, con:
        raw_penguins.head(0).to_sql("penguins_raw", con, index=False)
    with pytest.raises(DataError, match="no rows"):
        from_sqlite(db)


def test_conform_missing_and_extra_columns(raw_penguins):
    bad = raw_penguins.rename(columns={"Sex": "sex"})
    with pytest.raises(DataError, match=r"Missing: \['Sex'\]; unexpected: \['sex'\]"):
        conform(bad)
    with pytest.raises(DataError, match=r"Missing: \['Comments'\]; unexpected: \[\]"):
        conform(raw_penguins.drop(columns="Comments"))
    with pytest.raises(DataError, match=r"Missing: \[\]; unexpected: \['Weather'\]") as ei:
        conform(raw_penguins.assign(Weather="sunny"), source="field.csv")
    assert "field.csv" in str(ei.value)


def test_conform_column_order_does_not_matter(raw_penguins):
    shuffled = raw_penguins[list(reversed(raw_penguins.columns))]
    pd.testing.assert_frame_equal(conform(shuffled), raw_penguins)


def test_numeric_column_holding_text_names_column_and_row(tmp_path, raw_penguins):
    df = pd.read_csv(penguins_csv())
    df["Body Mass (g)"] = df["Body Mass (g)"].astype(object)
    df.loc[7, "Body Mass (g)"] = "heavy"
    p = tmp_path / "bad.csv"
    df.to_csv(p, index=False)
    with pytest.warns(DataWarning) as caught:  # kept, for clean() to decide (it sets "heavy" missing)
        got = from_csv(p)
    assert got.loc[7, "Body Mass (g)"] == "heavy" and got.loc[0, "Body Mass (g)"] == "3750.0"
    assert "bad.csv: kept 1 numeric column(s)" in str(caught[0].message)
    assert "column 'Body Mass (g)': 1 row(s) hold text, e.g. row 7 = 'heavy'" in str(caught[0].message)
    with pytest.raises(DataError) as ei:
        from_csv(p, strict=True)
    msg = str(ei.value)
    assert "bad.csv" in msg and "'Body Mass (g)'" in msg and "row 7 = 'heavy'" in msg


def test_text_in_numeric_columns_is_kept_and_reported(tmp_path, raw_penguins):
    with pytest.warns(DataWarning) as caught:
        df = collect(typed_csv(tmp_path))
    assert len(caught) == 1
    msg, report = str(caught[0].message), caught[0].message.report
    assert msg.startswith("typed.csv: kept 7 numeric column(s) as text, for clean() to parse") and "strict=True" in msg
    assert "column 'Body Mass (g)': 115 row(s) hold text, e.g. row 1 = '3,800', row 4 = '3,450', row 7 = '4,675'" in msg
    assert "column 'Culmen Length (mm)': 36 row(s) hold text, e.g. row 0 = '39.1 mm'" in msg
    assert "column 'Sample Number': 1 row(s) hold text, e.g. row 172 = 'Sample Number'" in msg
    assert [k["column"] for k in report] == [c for c, kind in RAW_COLUMNS.items() if kind != "str"]
    assert report[0] == {"column": "Sample Number", "count": 1, "examples": {172: "Sample Number"}}
    assert {k["column"]: k["count"] for k in report}["Body Mass (g)"] == 115
    # kept exactly as typed, as text; the text columns are read as usual
    assert df.shape == (345, 17) and pd.api.types.is_string_dtype(df["Body Mass (g)"])
    assert df.loc[[0, 1, 172], "Body Mass (g)"].tolist() == ["3750", "3,800", "Body Mass (g)"]
    assert df.loc[[0, 1], "Culmen Length (mm)"].tolist() == ["39.1 mm", "39.5"]
    pd.testing.assert_series_equal(df["Species"].drop(172).reset_index(drop=True), raw_penguins["Species"])


def test_strict_refuses_text_in_numeric_columns(tmp_path):
    p = typed_csv(tmp_path)
    for strict_call in (lambda: collect(p, strict=True), lambda: from_csv(p, strict=True)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # strict refuses; it does not also warn
            with pytest.raises(DataError) as ei:
                strict_call()
        msg = str(ei.value)
        assert msg.startswith("typed.csv: numeric columns hold text:")
        assert "column 'Body Mass (g)': 115 row(s) hold text, e.g. row 1 = '3,800'" in msg
        assert "row 172 = 'Sample Number'" in msg and "strict=True" in msg


def test_strict_reaches_every_source(tmp_path, raw_penguins):
    bad = raw_penguins.astype({"Flipper Length (mm)": object})
    bad.loc[5, "Flipper Length (mm)"] = "190 mm"
    with closing(sqlite3.connect(tmp_path / "bad.db")) as con, con:
        bad.to_sql("penguins_raw", con, index=False)
    bad.to_csv(tmp_path / "bad.csv", index=False)
    write_html_table(bad, tmp_path / "bad.html")
    with JSONAPIServer(bad) as api:
        for source in (tmp_path / "bad.db", tmp_path / "bad.csv", tmp_path / "bad.html", api.url):
            with pytest.warns(DataWarning, match="row 5 = '190 mm'"):
                got = collect(source)
            assert got.loc[5, "Flipper Length (mm)"] == "190 mm", source
            assert pd.to_numeric(got["Flipper Length (mm)"].drop(5)).equals(raw_penguins["Flipper Length (mm)"].drop(5))
            with pytest.raises(DataError, match="'Flipper Length \\(mm\\)': 1 row\\(s\\) hold text"):
                collect(source, strict=True)


def test_unfixable_problems_still_fail_at_once(tmp_path):
    "Keeping text is for what cleaning can fix; a missing column is refused whatever `strict` says."
    typed = pd.read_csv(typed_csv(tmp_path), dtype=str).drop(columns="Sex")
    typed.to_csv(tmp_path / "nosex.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"Missing: \['Sex'\]"):
            collect(tmp_path / "nosex.csv")


def test_int_column_with_fraction(raw_penguins):
    bad = raw_penguins.astype({"Sample Number": "float64"})
    bad.loc[3, "Sample Number"] = 3.5
    with pytest.raises(DataError, match="'Sample Number' should hold whole numbers"):
        conform(bad)


def test_conform_empty_frame(raw_penguins):
    with pytest.raises(DataError, match="no rows"):
        conform(raw_penguins.head(0), source="empty source")


def test_conform_coerces_kinds():
    df = pd.DataFrame({"n": ["1", "2", None], "x": ["1.5", None, "3"], "s": [1, 2, 3]})
    out = conform(df, {"n": "int", "x": "float", "s": "str"})
    assert out["n"].dtype == "Int64" and out["n"].tolist()[:2] == [1, 2] and out["n"].isna().iloc[2]
    assert out["x"].dtype == "float64" and out["x"].iloc[0] == 1.5 and np.isnan(out["x"].iloc[1])
    assert out["s"].tolist() == ["1", "2", "3"]


def test_conform_text_column_all_missing(raw_penguins):
    "A text column with no value in any row (a query for the rows without Sex) still gets the text dtype."
    no_sex = raw_penguins[raw_penguins["Sex"].isna()].astype({"Sex": object})
    no_sex["Sex"] = None
    out = conform(no_sex)
    assert out["Sex"].isna().all()
    assert (out.dtypes == conform(raw_penguins).dtypes).all(), out.dtypes[out.dtypes != conform(raw_penguins).dtypes]


# ----------------------------------------------------------------------------- build_database atomicity

def _failing_to_sql(monkeypatch):
    "Make DataFrame.to_sql write part of the rows, then fail."
    original = pd.DataFrame.to_sql
    calls = []

    def half_then_boom(self, name, con, *args, **kwargs):
        calls.append(name)
        original(self.iloc[: len(self) // 2], name, con, *args, **kwargs)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pd.DataFrame, "to_sql", half_then_boom)
    return calls


def test_build_database_failure_leaves_nothing(tmp_path, monkeypatch, files_in):
    folder = tmp_path / "db"
    calls = _failing_to_sql(monkeypatch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_database(folder / "penguins.sqlite")
    assert calls == ["penguins_raw"]
    assert not (folder / "penguins.sqlite").exists()
    assert not folder.exists() or files_in(folder) == []  # no *.tmp, no journal (built in memory)
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))


def test_build_database_failure_keeps_existing_db(tmp_path, monkeypatch, files_in, raw_penguins):
    db = build_database(tmp_path / "penguins.sqlite")
    before = db.read_bytes()
    _failing_to_sql(monkeypatch)
    with pytest.raises(RuntimeError):
        build_database(db, overwrite=True)
    assert db.read_bytes() == before
    assert files_in(tmp_path) == ["penguins.sqlite"]
    monkeypatch.undo()
    pd.testing.assert_frame_equal(from_sqlite(db), raw_penguins)


def test_build_database_does_not_overwrite_without_flag(tmp_path, small_csv, raw_penguins, files_in):
    db = build_database(tmp_path / "penguins.sqlite", csv=small_csv)
    assert len(from_sqlite(db)) == 12
    assert build_database(db) == db  # exists: left alone, even though the default CSV differs
    assert len(from_sqlite(db)) == 12
    assert build_database(db, overwrite=True) == db
    pd.testing.assert_frame_equal(from_sqlite(db), raw_penguins)
    assert files_in(tmp_path) == ["penguins.sqlite", "small.csv"]


def test_build_database_bad_csv_writes_nothing(tmp_path, files_in):
    bad = tmp_path / "src" / "bad.csv"
    bad.parent.mkdir()
    bad.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        build_database(tmp_path / "out" / "penguins.sqlite", csv=bad)
    assert not (tmp_path / "out" / "penguins.sqlite").exists()
    assert not (tmp_path / "out").exists() or files_in(tmp_path / "out") == []


# ----------------------------------------------------------------------------- core: atomic_write

def test_atomic_write_text_and_bytes(tmp_path, files_in):
    p = tmp_path / "sub" / "f.txt"
    with atomic_write(p) as f:
        f.write("héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    with atomic_write(p, "wb") as f:
        f.write(b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert files_in(p.parent) == ["f.txt"]


def test_atomic_write_error_keeps_old_content(tmp_path, files_in):
    p = tmp_path / "f.txt"
    p.write_text("old content", encoding="utf-8")
    with pytest.raises(KeyError):
        with atomic_write(p) as f:
            f.write("new content, half")
            f.flush()
            raise KeyError("boom")
    assert p.read_text(encoding="utf-8") == "old content"
    assert files_in(tmp_path) == ["f.txt"]


def test_atomic_write_error_on_new_file_leaves_nothing(tmp_path, files_in):
    with pytest.raises(ZeroDivisionError):
        with atomic_write(tmp_path / "new.bin", "wb") as f:
            f.write(b"partial")
            1 / 0
    assert files_in(tmp_path) == []


def test_atomic_write_keeps_permissions(tmp_path):
    p = tmp_path / "secret.txt"
    p.write_text("a")
    p.chmod(0o600)
    with atomic_write(p) as f:
        f.write("b")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    q = tmp_path / "fresh.txt"
    with atomic_write(q) as f:
        f.write("c")
    assert stat.S_IMODE(q.stat().st_mode) == 0o644


# ----------------------------------------------------------------------------- core: seeds, devices, modes, folders

def _draw(gen):
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(),
            torch.rand(3, generator=gen).tolist())


def test_seed_everything_is_deterministic():
    a = _draw(seed_everything(123))
    b = _draw(seed_everything(123))
    c = _draw(seed_everything(124))
    assert a == b
    assert a != c
    assert isinstance(seed_everything(0), torch.Generator)
    assert seed_everything(np.int64(7)).initial_seed() == 7


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.5, "1", None])
def test_seed_everything_rejects_bad_seeds(seed):
    with pytest.raises(DataError, match="seed must be an integer"):
        seed_everything(seed)


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_get_device_cpu(no_accelerator):
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cpu")) == torch.device("cpu")
    assert get_device() == torch.device("cpu")


@pytest.mark.parametrize("bad", ["banana", "cuda:x", "gpu0"])
def test_get_device_unknown_string(bad):
    with pytest.raises(DataError, match="Unknown device"):
        get_device(bad)


def test_get_device_cuda_unavailable(no_accelerator, monkeypatch):
    with pytest.raises(DataError, match="not available") as ei:
        get_device("cuda")
    assert "the argument" in str(ei.value) and "['cpu']" in str(ei.value)
    monkeypatch.setenv("TRAINKIT_DEVICE", "cuda")
    with pytest.raises(DataError, match="TRAINKIT_DEVICE"):
        get_device()


def test_get_device_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DataError, match="1 CUDA device"):
        get_device("cuda:3")


def test_get_device_env_and_argument_precedence(no_accelerator, monkeypatch):
    monkeypatch.setenv("TRAINKIT_DEVICE", "banana")
    with pytest.raises(DataError, match="Unknown device 'banana'"):
        get_device()
    assert get_device("cpu") == torch.device("cpu")  # the argument wins over the env var
    monkeypatch.setenv("TRAINKIT_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


@pytest.mark.parametrize("fast,in_test,expected", [
    (None, None, False), (None, "1", True), ("1", None, True), ("yes", None, True), ("ON", None, True),
    ("0", "1", False), ("no", "1", False), ("", "1", False), ("true", "", True), (" off ", None, False),
])
def test_fast_mode(monkeypatch, fast, in_test, expected):
    for var, value in (("TRAINKIT_FAST", fast), ("IN_TEST", in_test)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert fast_mode() is expected
    assert pick("full", "fast") == ("fast" if expected else "full")


def test_fast_mode_rejects_garbage(monkeypatch):
    monkeypatch.setenv("TRAINKIT_FAST", "maybe")
    with pytest.raises(DataError, match="TRAINKIT_FAST='maybe'"):
        fast_mode()


@pytest.mark.parametrize("fn,env,sub", [(data_dir, "TRAINKIT_DATA", "data"),
                                         (artifacts_dir, "TRAINKIT_ARTIFACTS", "artifacts")])
def test_dir_precedence(tmp_path, monkeypatch, isolated_dirs, fn, env, sub):
    arg, from_env = tmp_path / "arg" / "deep", tmp_path / "env"
    monkeypatch.setenv(env, str(from_env))
    assert fn(arg) == arg and arg.is_dir()  # argument beats the env var
    assert fn(str(arg)) == arg
    assert fn() == from_env and from_env.is_dir()  # env var beats the default
    monkeypatch.delenv(env)
    assert fn() == isolated_dirs["user"] / sub  # the per-user default (redirected into tmp_path)
    assert (isolated_dirs["user"] / sub).is_dir()
    monkeypatch.setenv(env, "")  # an empty env var means "not set"
    assert fn() == isolated_dirs["user"] / sub


def test_autouse_fixture_isolates_folders(tmp_path):
    assert data_dir() == tmp_path / "tk_data"
    assert artifacts_dir() == tmp_path / "tk_artifacts"
    assert str(Path.home()) not in str(core._dir(None, "NO_SUCH_TRAINKIT_VAR", "x"))


def test_dir_not_creatable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TRAINKIT_DATA", str(blocker / "data"))
    with pytest.raises(DataError, match="TRAINKIT_DATA"):
        data_dir()


def test_environment(no_accelerator, monkeypatch):
    monkeypatch.setenv("TRAINKIT_FAST", "1")
    env = environment()
    assert env["device"] == "cpu" and env["gpu"] is None and env["fast_mode"] is True
    assert env["torch"] == torch.__version__ and env["threads"] >= 1
