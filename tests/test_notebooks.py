"""Every notebook, run top to bottom the way a learner's Jupyter "Run All" runs it.

nbdev-test skips the cells flagged `#| notest` or `#| gpu`; a learner's Run All does not, and once stopped at such a
cell on a CPU laptop. So every cell of every notebook in nbs/ (found by glob: a new chapter is covered the day it lands)
runs in a real Jupyter kernel, in fast mode (TRAINKIT_FAST=1, IN_TEST unset), with a per-cell timeout.

What runs is the instructor edition (tools/editions.py: the notebooks as they are, less the closing `nbdev_export()`
cell, in a temporary folder), executed once by the session fixture `executed_course` (tests/conftest.py) with
tools/nbrun.py, with strict exercise checks: a solution that fails its check fails its notebook. The same executed
notebooks serve the handouts test, so the course runs once for both. Each notebook gets its own TRAINKIT_DATA and
TRAINKIT_ARTIFACTS, so none depends on another having run first. A failure names the cell and shows its source and the
error; each notebook's seconds are printed when the run is done.
"""
from __future__ import annotations

import json

import nbformat
import pytest

from nbrun import kernel_dir, notebooks, run_notebook


@pytest.mark.slow  # about five minutes for the whole course on 2 cores (two notebooks at a time); CI runs `slow` tests
@pytest.mark.parametrize("nb", notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_all_cells(nb, executed_course):
    runs = json.loads((executed_course / "runs.json").read_text())
    assert nb.stem in runs, f"{nb.name} was not run: is it in the instructor edition ({sorted(runs)})?"
    assert runs[nb.stem]["failure"] is None, runs[nb.stem]["failure"]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    return kernel_dir(tmp_path_factory.mktemp("kernels"))


# The executor itself: it must run flagged cells, in fast mode, in the notebook's folder; and it must report a failure.
PLANTED = [
    nbformat.v4.new_markdown_cell("# A planted notebook"),
    nbformat.v4.new_code_cell("import os\nfrom trainkit.core import fast_mode\n"
                              "assert fast_mode() and 'IN_TEST' not in os.environ\n"
                              "open('ran_here.txt', 'w').write(os.environ['TRAINKIT_DATA'])"),
    nbformat.v4.new_code_cell("#| gpu\nflagged = 'ran'"),
    nbformat.v4.new_code_cell("#| hide\n#| notest\nassert flagged == 'ran'\nraise ValueError('planted failure')"),
    nbformat.v4.new_code_cell("open('after_failure.txt', 'w').write('should not run')"),
]


def test_executor_runs_flagged_cells_and_reports_failure(tmp_path, kernels):
    nb_path = tmp_path / "nbs" / "99_planted.ipynb"
    nb_path.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=PLANTED), nb_path)
    run = run_notebook(nb_path, tmp_path / "scratch", timeout=60, kernels=kernels)
    assert run.failure is not None, "a notebook whose #| notest cell raises must be reported as failing"
    assert "99_planted.ipynb, cell 3" in run.failure and "raise ValueError('planted failure')" in run.failure, run.failure
    assert "ValueError: planted failure" in run.failure and "\x1b[" not in run.failure, run.failure
    # the probe ran in the notebook's folder with the scratch data folder; nothing ran after the failure
    assert (nb_path.parent / "ran_here.txt").read_text() == str(tmp_path / "scratch" / "data")
    assert not (nb_path.parent / "after_failure.txt").exists()
    # the executed notebook comes back: outputs up to the failing cell, none after it
    assert run.nb.cells[3].outputs[-1]["output_type"] == "error" and run.nb.cells[4].outputs == []


def test_executor_reports_a_timeout(tmp_path, kernels):
    nb_path = tmp_path / "slow.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time; time.sleep(30)")]), nb_path)
    run = run_notebook(nb_path, tmp_path, timeout=2, kernels=kernels)
    assert run.failure is not None and "timed out" in run.failure and "time.sleep(30)" in run.failure, run.failure


def test_learner_mode_and_strict_exercises(tmp_path, kernels):
    "fast=False is a learner's Run All (TRAINKIT_FAST=0); `exercises` reaches check_exercise."
    cell = ("import os\nfrom trainkit.core import fast_mode\n"
            "print(fast_mode(), os.environ['TRAINKIT_EXERCISES'])")
    nb_path = tmp_path / "mode.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), nb_path)
    run = run_notebook(nb_path, fast=False, exercises="strict", kernels=kernels)
    assert run.ok and run.nb.cells[0].outputs[0]["text"] == "False strict\n", run.nb.cells[0].outputs


def test_run_course_in_parallel_writes_executed_notebooks(tmp_path):
    "Two notebooks at a time, each in its own process: executed copies and runs.json, a failure named."
    from nbrun import run_course

    src = tmp_path / "src"; src.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), src / "a.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")]), src / "b.ipynb")
    runs = run_course(src, tmp_path / "out", jobs=2, log=None)
    assert list(runs) == ["a", "b"] and runs["a"]["failure"] is None and "ZeroDivisionError" in runs["b"]["failure"]
    assert json.loads((tmp_path / "out" / "runs.json").read_text()) == runs
    assert nbformat.read(tmp_path / "out" / "a.ipynb", as_version=4).cells[0].outputs[0]["text"] == "42\n"


def test_every_notebook_is_found():
    "The glob finds the index and the chapters, and would find a chapter added later (e.g. 05b_*)."
    names = [p.stem for p in notebooks()]
    assert "index" in names and "00_core" in names and "12_pipeline" in names and len(names) >= 15, names
