"""A new user's whole path, timed: clone the repository, run the README's first two commands exactly as written, then
run every notebook in course order in learner mode, as a learner's Run All would.

Not part of the default run (the `walkthrough` marker is deselected by pyproject's addopts): `make walkthrough` runs it.
It takes as long as a new user's afternoon: building .venv (minutes, from PyPI or a wheel folder), `make run`, `make
test` (the whole test suite), then every chapter in learner mode (their **Time:** lines add up to about half an hour on
2 cores). Its steps:

1. `git clone` the repository (its committed HEAD: uncommitted work is not what a new user gets) into a temporary folder;
2. read the README's first code block and run its commands (`make run`, `make test`) in the clone, in order, each
   with the shell, as written — parsed, never hard-coded, so a changed README is what is tested;
3. run every notebook of the clone's nbs/ (index first, then the chapters in file order) with the clone's
   .venv/bin/python as the kernel, in learner mode (TRAINKIT_FAST=0, exercise checks printing, not raising), in place —
   a learner's Run All writes where the notebook lies — with one data and artifacts folder shared by all of them, as a
   learner has one per-user folder;
4. write a report of every step's seconds and outcome, walkthrough.json and walkthrough.md, and the executed notebooks
   (executed/NAME.ipynb) to $TRAINKIT_WALKTHROUGH_REPORT (a folder; default: the run's temporary folder, printed at the
   end), then fail naming every step that failed with its error.

The course's data and artifacts folders point into the temporary folder (a new user's would be ~/.local/share/trainkit):
the walkthrough never writes into the home of the machine that runs it.

Measured on the shared 2-core development machine (pip installing from a local wheel folder): `git clone` 3 s,
`make run` 825 s (building .venv is most of it), 00_core 29 s and 00a_setup 47 s in learner mode. The whole path adds
`make test` and every chapter in learner mode: over an hour, past CI's 30-minute budget, so .ci/run does not run it.

Switches, for trying the walkthrough out (the defaults are the whole path):
- TRAINKIT_WALKTHROUGH_REPO: what to clone (a path or URL; default: this repository).
- TRAINKIT_WALKTHROUGH_COMMANDS: how many of the README's commands to run (default 2; 1 runs `make run` only, which
  still builds .venv, and skips the hour-long `make test`).
- TRAINKIT_WALKTHROUGH_NOTEBOOKS: a comma-separated list of notebook names to run instead of all of them
  (e.g. `00_core,06_files`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def readme_commands(readme: str) -> list[str]:
    "The commands of the README's first fenced code block, comments and blank lines dropped, in order."
    m = re.search(r"^```[a-z]*\n(.*?)^```", readme, re.S | re.M)
    if m is None:
        raise AssertionError("README.md has no code block: a new user has no command to run")
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in m.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def clean_env(home: Path) -> dict[str, str]:
    "The environment a new user's shell has: no virtual environment active, trainkit's variables unset, data in `home`."
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRAINKIT_", "PYTEST_", "VIRTUAL_ENV")) and k not in ("IN_TEST", "PYTHONPATH")}
    bin_dir = str(Path(sys.prefix) / "bin")  # this test's venv must not shadow the clone's
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)
    env.update(TRAINKIT_DATA=str(home / "data"), TRAINKIT_ARTIFACTS=str(home / "artifacts"))
    return env


def run_step(steps: list[dict], name: str, cmd: str, cwd: Path, env: dict, log: Path) -> dict:
    "Run shell command `cmd` in `cwd`, its output to `log`; append and return its step record (seconds, rc, tail)."
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, shell=True, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    tail = log.read_text(errors="replace")[-3000:]
    step = {"step": name, "seconds": round(time.perf_counter() - start, 1), "ok": rc == 0,
            "error": None if rc == 0 else f"`{cmd}` exited with {rc}; the end of {log}:\n{tail}"}
    steps.append(step)
    return step


def write_report(steps: list[dict], folder: Path) -> Path:
    "walkthrough.json and walkthrough.md (a table of steps, seconds and outcome) in `folder`; return the .md path."
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "walkthrough.json").write_text(json.dumps(steps, indent=1))
    total = sum(s["seconds"] for s in steps)
    rows = [f"| {s['step']} | {s['seconds']:.0f} | {'ok' if s['ok'] else 'FAILED'} |" for s in steps]
    md = ["# The new-user walkthrough", "", "| step | seconds | outcome |", "|---|---|---|", *rows,
          f"| **total** | **{total:.0f}** ({total / 60:.1f} min) | |", ""]
    (folder / "walkthrough.md").write_text("\n".join(md))
    return folder / "walkthrough.md"


def test_readme_commands_are_parsed_in_order():
    "The parser reads the README's opening block: the commands a new user types, nothing else (cheap: runs with the suite)."
    block = "# t\n\n```bash\nmake run    # set up\n\nmake test   # every test\n```\n\n```bash\nother\n```\n"
    assert readme_commands(block) == ["make run", "make test"]
    assert readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))[:2] == ["make run", "make test"]


@pytest.mark.walkthrough
def test_new_user_walkthrough(tmp_path, request):
    import nbformat
    import nbrun  # tools/nbrun.py, the course's notebook runner

    repo = os.environ.get("TRAINKIT_WALKTHROUGH_REPO", str(ROOT))
    n_commands = int(os.environ.get("TRAINKIT_WALKTHROUGH_COMMANDS", "2"))
    only = [n.strip() for n in os.environ.get("TRAINKIT_WALKTHROUGH_NOTEBOOKS", "").split(",") if n.strip()]
    report_dir = Path(os.environ.get("TRAINKIT_WALKTHROUGH_REPORT") or tmp_path / "report")
    logs, home, clone = tmp_path / "logs", tmp_path / "home", tmp_path / "trainkit"
    logs.mkdir()
    env, steps = clean_env(home), []

    step = run_step(steps, "git clone", f"git clone --quiet {repo} {clone}", tmp_path, env, logs / "clone.log")
    if step["ok"]:
        commands = readme_commands((clone / "README.md").read_text(encoding="utf-8"))[:n_commands]
        for i, cmd in enumerate(commands):
            if not run_step(steps, f"README: `{cmd}`", cmd, clone, env, logs / f"command{i}.log")["ok"]:
                break
    python = clone / ".venv" / "bin" / "python"
    if all(s["ok"] for s in steps):
        found = sorted(nbrun.notebooks(clone / "nbs"), key=lambda p: p.stem != "index")  # the README: index first
        unknown = sorted(set(only) - {p.stem for p in found})
        assert not unknown, f"TRAINKIT_WALKTHROUGH_NOTEBOOKS names notebooks that do not exist: {unknown}"
        for nb in [p for p in found if not only or p.stem in only]:
            run = nbrun.run_notebook(nb, home, fast=False, python=python, timeout=nbrun.CELL_TIMEOUT)
            (report_dir / "executed").mkdir(parents=True, exist_ok=True)
            nbformat.write(run.nb, report_dir / "executed" / nb.name)  # what the learner saw, outputs included
            steps.append({"step": f"notebook {nb.stem} (learner mode)", "seconds": round(run.seconds, 1),
                          "ok": run.ok, "error": run.failure})
    md = write_report(steps, report_dir)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(md.read_text())
            reporter.write_line(f"(report: {md} and {md.with_suffix('.json')}; logs: {logs})")
    failed = [s for s in steps if not s["ok"]]
    assert not failed, "\n\n".join(f"{s['step']} failed:\n{s['error']}" for s in failed)
