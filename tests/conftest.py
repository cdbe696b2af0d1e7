"""Shared fixtures for the trainkit test-suite.

Every test runs with TRAINKIT_DATA / TRAINKIT_ARTIFACTS pointing into its own tmp_path, and the
per-user fallback folder (platformdirs) redirected there too, so nothing is ever written to $HOME.

One trained model for the whole session (Lightning's BoringModel): `penguin_learner` is the course's
penguin MLP, trained once, and `penguin_bundle` its bundle, exported once. Both are shared by every test
that asks for them, so no test may change them: train your own model to change weights, and copy
`penguin_bundle.path` before editing any file in it. `free_port()` is a plain function too, for helper
modules (`from conftest import free_port`).

The course, executed once per session (tools/nbrun.py runs it, tools/editions.py builds it): `course_editions` is the
student and instructor editions built into a temporary folder; `executed_course` the instructor edition run top to
bottom in fast mode with strict exercise checks, `executed_student` the student edition (checks print). Each is a
folder of executed NB.ipynb files plus runs.json ({name: {seconds, failure, mode}}), executed on first use.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from trainkit.data import from_csv, penguins_csv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # nbrun and editions: the course's notebook runner and edition builder

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


def source_tree_digest() -> dict[str, str]:
    "A digest of every file under trainkit/ and nbs/: running the editions must leave it unchanged."
    files = [p for folder in ("trainkit", "nbs") for p in sorted((ROOT / folder).rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts]
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="session")
def course_editions(tmp_path_factory) -> Path:
    "Both editions of every notebook in nbs/ (tools/editions.py), built once: student/, instructor/, bench/results/."
    import editions

    out = tmp_path_factory.mktemp("editions")
    summary = editions.build(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "source_digest.json").write_text(json.dumps(source_tree_digest()))  # before any edition ran
    return out


def _execute(request, kind: str, exercises: str, reuse_var: str) -> Path:
    "Run one edition top to bottom in fast mode (or reuse a folder named by `reuse_var`); print each notebook's time."
    import nbrun

    if os.environ.get(reuse_var):
        return Path(os.environ[reuse_var])
    editions = request.getfixturevalue("course_editions")
    out = request.getfixturevalue("tmp_path_factory").mktemp(f"executed_{kind}")
    start = time.perf_counter()
    runs = nbrun.run_course(editions / kind, out, fast=True, jobs=int(os.environ.get("TRAINKIT_NB_JOBS", 2)),
                            exercises=exercises, log=None)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(f"{kind} edition run top to bottom (every cell, fast mode, "
                                f"{os.environ.get('TRAINKIT_NB_JOBS', 2)} at a time):")
            for name, r in runs.items():
                reporter.write_line(f"  {name:<24} {r['seconds']:6.1f} s  {'ok' if r['failure'] is None else 'FAILED'}")
            reporter.write_line(f"  {'total':<24} {sum(r['seconds'] for r in runs.values()):6.1f} s "
                                f"({time.perf_counter() - start:.0f} s wall clock)")
    return out


@pytest.fixture(scope="session")
def executed_course(request) -> Path:
    "The instructor edition executed (fast mode, TRAINKIT_EXERCISES=strict): NB.ipynb files and runs.json."
    return _execute(request, "instructor", "strict", "TRAINKIT_EXECUTED_COURSE")


@pytest.fixture(scope="session")
def executed_student(request) -> Path:
    "The student edition executed (fast mode, TRAINKIT_EXERCISES=print): NB.ipynb files and runs.json."
    return _execute(request, "student", "print", "TRAINKIT_EXECUTED_STUDENT")
