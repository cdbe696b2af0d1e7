"""Every notebook, run top to bottom the way a learner's Jupyter "Run All" runs it.

nbdev-test skips the cells flagged `#| notest` or `#| gpu`; a learner's Run All does not, and once stopped at such a
cell on a CPU laptop. So this runs EVERY cell of every notebook in nbs/ (found by glob: a new chapter is covered the day
it lands) in a real Jupyter kernel, in fast mode (TRAINKIT_FAST=1, IN_TEST unset), with a per-cell timeout.

The notebooks run in a temporary copy of the repository (pyproject.toml, nbs/, trainkit/), each with its own folder as
the working directory, so the cells that write files (`nbdev_export()` at the end of every chapter, 01a's page
regeneration) write into the copy, never into the working tree; the kernel imports the installed trainkit. Each
notebook gets its own TRAINKIT_DATA and TRAINKIT_ARTIFACTS, so none depends on another having run first.
A failure names the cell and shows its source and the error; each notebook's seconds are printed at the end.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
CELL_TIMEOUT = int(os.environ.get("TRAINKIT_CELL_TIMEOUT", 300))  # seconds per cell, as pyproject's cell_timeout
KERNEL = "trainkit-test"


def notebooks(folder: Path = NBS) -> list[Path]:
    "Every notebook under `folder`, skipping names nbdev skips too (starting with `_` or `.`, e.g. checkpoints)."
    return sorted(p for p in folder.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts))


def kernel_dir(folder: Path) -> Path:
    "Write a kernelspec that starts this interpreter (the venv's), so no other `python3` kernel on the machine is used."
    spec = folder / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return folder


def kernel_env(scratch: Path) -> dict[str, str]:
    "The kernel's environment: fast mode as a learner would set it (not nbdev-test's IN_TEST), data in `scratch`."
    env = {k: v for k, v in os.environ.items() if k not in ("IN_TEST", "TRAINKIT_DEVICE")}
    env.update(TRAINKIT_FAST="1", TRAINKIT_DATA=str(scratch / "data"), TRAINKIT_ARTIFACTS=str(scratch / "artifacts"))
    # One intra-op thread: fast mode's tensors are tiny, and on a busy 2-core CI machine torch's thread pool
    # oversubscribes the cores (02_models' model tour took 130 s with the default pool, 18 s with one thread).
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def describe(nb_path: Path, index: int, cell, error: Exception, timeout: int = CELL_TIMEOUT) -> str:
    "What a reader needs to fix a failing cell: where it is, its source, and the error without terminal colours."
    if isinstance(error, CellExecutionError):
        tracebacks = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        detail = "\n".join(tracebacks[-1]["traceback"]) if tracebacks else f"{error.ename}: {error.evalue}"
    elif isinstance(error, CellTimeoutError):
        detail = f"timed out after {timeout} s (the per-cell limit; TRAINKIT_CELL_TIMEOUT sets it)"
    else:
        detail = f"the kernel died: {error}"
    return (f"{nb_path.name}, cell {index} (id {cell.get('id', '?')}) failed.\n"
            f"--- cell source ---\n{cell.source}\n--- error ---\n{_ANSI.sub('', detail)}")


def run_notebook(nb_path: Path, kernels: Path, scratch: Path, timeout: int = CELL_TIMEOUT) -> tuple[float, str | None]:
    "Run every cell of `nb_path` (flagged or not) in a fresh kernel, cwd its folder; return (seconds, failure or None)."
    nb = nbformat.read(nb_path, as_version=4)
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(nb_path.parent)}})
    start = time.perf_counter()
    with client.setup_kernel(env=kernel_env(scratch), cleanup_kc=True):
        for index, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
                return time.perf_counter() - start, describe(nb_path, index, cell, e, timeout)
    return time.perf_counter() - start, None


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    "A copy of what the notebooks read and write: pyproject.toml (nbdev's config), nbs/ and trainkit/."
    dest = tmp_path_factory.mktemp("repo")
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    junk = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", ".quarto", "_proc", "data", "artifacts")
    for folder in ("nbs", "trainkit"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=junk)
    return dest


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> Path:
    return kernel_dir(tmp_path_factory.mktemp("kernels"))


@pytest.fixture(scope="module")
def timings(request):
    "Collect each notebook's seconds and print them when the module is done (past pytest's output capture)."
    seconds: dict[str, float] = {}
    yield seconds
    if not seconds:
        return
    lines = [f"  {name:<24} {s:6.1f} s" for name, s in seconds.items()]
    lines.append(f"  {'total':<24} {sum(seconds.values()):6.1f} s")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("notebooks run top to bottom (every cell, fast mode):")
        for line in lines:
            reporter.write_line(line)


@pytest.mark.slow  # two to three minutes for all of them on 2 cores; CI runs `slow` tests too
@pytest.mark.parametrize("nb", notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_all_cells(nb, repo_copy, kernels, timings, tmp_path):
    seconds, failure = run_notebook(repo_copy / nb.relative_to(ROOT), kernels, tmp_path)
    timings[nb.stem] = seconds
    print(f"{nb.name}: {seconds:.1f} s")
    assert failure is None, failure


# The executor itself: it must run flagged cells, in fast mode, in the copy; and it must report a failure.
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
    _, failure = run_notebook(nb_path, kernels, tmp_path / "scratch", timeout=60)
    assert failure is not None, "a notebook whose #| notest cell raises must be reported as failing"
    assert "99_planted.ipynb, cell 3" in failure and "raise ValueError('planted failure')" in failure, failure
    assert "ValueError: planted failure" in failure and "\x1b[" not in failure, failure
    # the probe ran in the notebook's folder with the scratch data folder; nothing ran after the failure
    assert (nb_path.parent / "ran_here.txt").read_text() == str(tmp_path / "scratch" / "data")
    assert not (nb_path.parent / "after_failure.txt").exists()


def test_executor_reports_a_timeout(tmp_path, kernels):
    nb_path = tmp_path / "slow.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time; time.sleep(30)")]), nb_path)
    _, failure = run_notebook(nb_path, kernels, tmp_path, timeout=2)
    assert failure is not None and "timed out" in failure and "time.sleep(30)" in failure, failure


def test_every_notebook_is_found():
    "The glob finds the index and the chapters, and would find a chapter added later (e.g. 05b_*)."
    names = [p.stem for p in notebooks()]
    assert "index" in names and "00_core" in names and "12_pipeline" in names and len(names) >= 15, names
