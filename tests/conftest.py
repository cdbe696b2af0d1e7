"""Shared fixtures for the trainkit test-suite.

Every test runs with TRAINKIT_DATA / TRAINKIT_ARTIFACTS pointing into its own tmp_path, and the
per-user fallback folder (platformdirs) redirected there too, so nothing is ever written to $HOME.

One trained model for the whole session (Lightning's BoringModel): `penguin_learner` is the course's
penguin MLP, trained once, and `penguin_bundle` its bundle, exported once. Both are shared by every test
that asks for them, so no test may change them: train your own model to change weights, and copy
`penguin_bundle.path` before editing any file in it. `free_port()` is a plain function too, for helper
modules (`from conftest import free_port`).
"""
from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest

from trainkit.data import from_csv, penguins_csv

PENGUIN_EPOCHS = 10  # the shared model's training: enough to be a real model, quick on a CPU


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


def free_port() -> int:
    "A local TCP port with nothing listening on it."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    "A local TCP port with nothing listening on it (the fixture form of `free_port()`)."
    return free_port()


@pytest.fixture(scope="session")
def penguin_learner(tmp_path_factory):
    "The course's penguin MLP (trainkit.export.penguin_learner: hidden (32,), seed 0), trained once. Never modify it."
    from trainkit.export import penguin_learner as train_penguin_mlp  # export needs the serve extra: import it here

    with pytest.MonkeyPatch.context() as mp:  # set up before any test's isolated_dirs, so the same isolation here
        mp.setenv("TRAINKIT_DATA", str(tmp_path_factory.mktemp("penguin_data")))
        for var in ("TRAINKIT_DEVICE", "TRAINKIT_FAST"):
            mp.delenv(var, raising=False)
        return train_penguin_mlp(epochs=PENGUIN_EPOCHS)


@pytest.fixture(scope="session")
def penguin_bundle(penguin_learner, tmp_path_factory):
    "`penguin_learner` exported once, loaded (a verified Bundle). Copy its folder (`.path`) before changing a file in it."
    from trainkit.export import export, load_bundle

    return load_bundle(export(penguin_learner, tmp_path_factory.mktemp("penguin_bundle")))


@pytest.fixture
def files_in():
    "A function listing every entry in a folder, hidden ones included."
    return lambda folder: sorted(p.name for p in Path(folder).iterdir())


def typed_csv(folder: Path) -> Path:
    "The shipped CSV as people type it: units, thousands separators, and the header twice (two exports glued)."
    typed = pd.read_csv(penguins_csv(), dtype=str)
    typed.loc[::10, "Culmen Length (mm)"] += " mm"
    typed.loc[1::3, "Body Mass (g)"] = typed.loc[1::3, "Body Mass (g)"].str.replace(r"^(\d)(\d{3})$", r"\1,\2", regex=True)
    p = folder / "typed.csv"
    p.write_text(typed[:172].to_csv(index=False) + typed[172:].to_csv(index=False), encoding="utf-8")
    return p
