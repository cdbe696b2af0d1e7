"""Shared fixtures for the trainkit test-suite.

Every test runs with TRAINKIT_DATA / TRAINKIT_ARTIFACTS pointing into its own tmp_path, and the
per-user fallback folder (platformdirs) redirected there too, so nothing is ever written to $HOME.
"""
from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest

from trainkit.data import from_csv, penguins_csv


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    "Point every trainkit folder at tmp_path; clear env vars that would change behaviour."
    data, artifacts = tmp_path / "tk_data", tmp_path / "tk_artifacts"
    monkeypatch.setenv("TRAINKIT_DATA", str(data))
    monkeypatch.setenv("TRAINKIT_ARTIFACTS", str(artifacts))
    # belt and braces: even the "no env var" fallback must not reach the user's home
    monkeypatch.setattr("trainkit.core.user_data_dir", lambda *a, **k: str(tmp_path / "tk_user"))
    for var in ("TRAINKIT_DEVICE", "TRAINKIT_FAST"):
        monkeypatch.delenv(var, raising=False)
    return {"data": data, "artifacts": artifacts, "user": tmp_path / "tk_user"}


@pytest.fixture(scope="session")
def _raw_penguins_session() -> pd.DataFrame:
    return from_csv(penguins_csv())


@pytest.fixture
def raw_penguins(_raw_penguins_session) -> pd.DataFrame:
    "The raw Palmer penguins records (344 x 17) as `from_csv` returns them; a fresh copy per test."
    return _raw_penguins_session.copy()


@pytest.fixture
def small_csv(tmp_path) -> Path:
    "A raw-schema CSV with the first 12 rows of the shipped penguins file."
    lines = penguins_csv().read_text(encoding="utf-8").splitlines(keepends=True)
    p = tmp_path / "small.csv"
    p.write_text("".join(lines[:13]), encoding="utf-8")
    return p


@pytest.fixture
def free_port() -> int:
    "A local TCP port with nothing listening on it."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def files_in():
    "A function listing every entry in a folder, hidden ones included."
    return lambda folder: sorted(p.name for p in Path(folder).iterdir())
