#!/usr/bin/env python3
"""Run notebooks top to bottom the way a learner's Jupyter "Run All" runs them: the course's one notebook runner.

nbdev-test skips the cells flagged `#| notest` or `#| gpu`; a learner's Run All does not. So this runs EVERY cell in a
real Jupyter kernel (fast mode, TRAINKIT_FAST=1, or learner mode, TRAINKIT_FAST=0; IN_TEST unset either way), with a
per-cell timeout, the working directory the notebook's own folder, and its own TRAINKIT_DATA and TRAINKIT_ARTIFACTS, so
no notebook depends on another having run first. It runs the notebook where it lies: run a copy (an edition from
tools/editions.py, or a temporary copy of nbs/) when its cells must not write beside the original. A failure names the
cell and shows its source and the error, and the cells after it are not run.

Used by tests/test_notebooks.py, tests/test_editions.py, tools/handouts.py and the walkthrough test:

    from nbrun import run_notebook, run_course        # with tools/ on sys.path
    run = run_notebook(path, fast=True)               # -> Run(path, nb, seconds, failure)
    runs = run_course(folder, out, fast=True, jobs=2) # every notebook of `folder`; executed copies in `out`

From a shell: `python tools/nbrun.py NB.ipynb ... --out DIR [--learner] [--jobs 2]`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
CELL_TIMEOUT = int(os.environ.get("TRAINKIT_CELL_TIMEOUT", 300))  # seconds per cell, as pyproject's cell_timeout
KERNEL = "trainkit-run"
RUNS_JSON = "runs.json"  # written by run_course beside the executed notebooks


def notebooks(
    folder: Path = NBS,  # a folder of notebooks (nbs/, or an edition's folder)
) -> list[Path]:
    "Every notebook under `folder` in course order, skipping names nbdev skips too (starting with `_` or `.`)."
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts))


def kernel_dir(
    folder: Path,  # where to write the kernelspec
    python: str | Path | None = None,  # the interpreter the kernel runs; this one (the venv's) by default
) -> Path:
    "Write a kernelspec that starts `python`, so no other `python3` kernel on the machine is used; return `folder`."
    spec = Path(folder) / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [str(python or sys.executable), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return Path(folder)


def kernel_env(
    scratch: Path,  # the run's own folder: data/ and artifacts/ go in it
    fast: bool = True,  # fast mode (TRAINKIT_FAST=1) or learner mode (TRAINKIT_FAST=0)
    exercises: str | None = None,  # TRAINKIT_EXERCISES: "strict" (a wrong solution raises), "print", or None (inherit)
) -> dict[str, str]:
    "The kernel's environment: the mode as a learner would set it (not nbdev-test's IN_TEST), data in `scratch`."
    env = {k: v for k, v in os.environ.items() if k not in ("IN_TEST", "TRAINKIT_DEVICE")}
    env.update(TRAINKIT_FAST="1" if fast else "0", TRAINKIT_DATA=str(Path(scratch) / "data"),
               TRAINKIT_ARTIFACTS=str(Path(scratch) / "artifacts"))
    if exercises is not None:
        env["TRAINKIT_EXERCISES"] = exercises
    if fast:  # fast mode's tensors are tiny; on a busy 2-core machine torch's thread pool oversubscribes the cores
        env.setdefault("OMP_NUM_THREADS", "1")  # (02_models' model tour: 130 s with the default pool, 18 s with one)
    return env


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def describe(
    nb_path: Path,  # the notebook
    index: int,  # the failing cell's position
    cell,  # the failing cell, with its outputs
    error: Exception,  # what nbclient raised
    timeout: int = CELL_TIMEOUT,  # the per-cell limit, quoted on a timeout
) -> str:
    "What a reader needs to fix a failing cell: where it is, its source, and the error without terminal colours."
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    if isinstance(error, CellExecutionError):
        tracebacks = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        detail = "\n".join(tracebacks[-1]["traceback"]) if tracebacks else f"{error.ename}: {error.evalue}"
    elif isinstance(error, CellTimeoutError):
        detail = f"timed out after {timeout} s (the per-cell limit; TRAINKIT_CELL_TIMEOUT sets it)"
    else:
        detail = f"the kernel died: {error}"
    return (f"{Path(nb_path).name}, cell {index} (id {cell.get('id', '?')}) failed.\n"
            f"--- cell source ---\n{cell.source}\n--- error ---\n{_ANSI.sub('', detail)}")


@dataclass
class Run:
    "One notebook run: the notebook, its executed cells (up to the failing one), seconds, and the failure or None."
    path: Path
    nb: object  # nbformat.NotebookNode
    seconds: float
    failure: str | None

    @property
    def ok(self) -> bool: return self.failure is None


def run_notebook(
    nb_path: Path,  # the notebook to run, where it lies (cwd: its folder)
    scratch: Path | None = None,  # the run's own folder for data/ and artifacts/; a temporary one if None
    *,
    fast: bool = True,  # fast mode, or learner mode (fast=False) as Jupyter's Run All runs it
    timeout: int = CELL_TIMEOUT,  # seconds per cell
    exercises: str | None = None,  # TRAINKIT_EXERCISES for the kernel (see `kernel_env`)
    python: str | Path | None = None,  # the kernel's interpreter; this one by default
    kernels: Path | None = None,  # a folder from `kernel_dir` to reuse; a temporary one if None
) -> Run:
    "Run every cell of `nb_path` (flagged or not) in a fresh kernel; stop at the first failing cell."
    import nbformat
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb_path = Path(nb_path).resolve()
    nb = nbformat.read(nb_path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="nbrun-") as tmp:
        kernels = Path(kernels) if kernels else kernel_dir(Path(tmp) / "kernels", python)
        scratch = Path(scratch) if scratch else Path(tmp) / "scratch"
        km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
        client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(nb_path.parent)}})
        start = time.perf_counter()
        with client.setup_kernel(env=kernel_env(scratch, fast, exercises), cleanup_kc=True):
            for index, cell in enumerate(nb.cells):
                try:
                    client.execute_cell(cell, index)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
                    return Run(nb_path, nb, time.perf_counter() - start, describe(nb_path, index, cell, e, timeout))
        return Run(nb_path, nb, time.perf_counter() - start, None)


def _run_one(path: Path, out: Path, fast: bool, timeout: int, exercises: str | None, python: str | None) -> dict:
    "Run one notebook and write `out`/NAME.ipynb (executed) and `out`/NAME.json (seconds, failure)."
    import nbformat
    run = run_notebook(path, fast=fast, timeout=timeout, exercises=exercises, python=python)
    nbformat.write(run.nb, out / path.name)
    result = {"seconds": round(run.seconds, 2), "failure": run.failure, "mode": "fast" if fast else "learner"}
    (out / f"{path.stem}.json").write_text(json.dumps(result, indent=1))
    return result


def run_course(
    paths: Path | list[Path],  # a folder of notebooks (every one, in course order), or a list of notebooks
    out: Path,  # where the executed notebooks NAME.ipynb and runs.json go
    *,
    fast: bool = True,  # fast or learner mode
    jobs: int = 1,  # notebooks run at the same time, each in its own process and kernel
    timeout: int = CELL_TIMEOUT,  # seconds per cell
    exercises: str | None = None,  # TRAINKIT_EXERCISES for the kernels
    python: str | Path | None = None,  # the kernels' interpreter
    log=print,  # called with one line per finished notebook; None for silence
) -> dict[str, dict]:
    "Run notebooks (each in a fresh kernel) into `out`; return {name: {seconds, failure, mode}}, also in out/runs.json."
    paths = [Path(p) for p in paths] if isinstance(paths, (list, tuple)) else notebooks(paths)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    args = [fast, timeout, exercises, None if python is None else str(python)]

    def one(path: Path) -> dict:
        if jobs <= 1:
            result = _run_one(path, out, *args)
        else:  # a process per notebook: nbclient's event loop and the kernels stay apart
            cmd = [sys.executable, __file__, str(path), "--out", str(out), "--timeout", str(timeout),
                   *([] if fast else ["--learner"]), *(["--exercises", exercises] if exercises else []),
                   *(["--python", str(python)] if python else []), "--one"]
            report = out / f"{path.stem}.json"
            report.unlink(missing_ok=True)  # a report left by an earlier run must not stand in for this one
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if not report.is_file():
                result = {"seconds": 0.0, "mode": "fast" if fast else "learner",
                          "failure": f"{path.name}: the runner itself failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"}
            else:
                result = json.loads(report.read_text())
        if log:
            log(f"{path.stem:<24} {result['seconds']:7.1f} s  {'ok' if result['failure'] is None else 'FAILED'}")
        return result

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = dict(zip((p.stem for p in paths), pool.map(one, paths)))
    (out / RUNS_JSON).write_text(json.dumps(results, indent=1))
    return results


def main(argv: list[str] | None = None) -> int:
    "Command line: run notebooks (or every notebook of a folder) into --out; exit 1 if any failed."
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="notebooks, or one folder of notebooks")
    ap.add_argument("--out", type=Path, required=True, help="folder for the executed notebooks and runs.json")
    ap.add_argument("--learner", action="store_true", help="learner mode (TRAINKIT_FAST=0); fast mode otherwise")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks run at the same time")
    ap.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell")
    ap.add_argument("--exercises", choices=["strict", "print"], help="TRAINKIT_EXERCISES for the kernels")
    ap.add_argument("--python", help="the kernels' interpreter (default: this one)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # run_course's worker: NAME.json only
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.one:
        result = _run_one(a.paths[0].resolve(), a.out, not a.learner, a.timeout, a.exercises, a.python)
        return 1 if result["failure"] else 0
    paths = a.paths[0] if len(a.paths) == 1 and a.paths[0].is_dir() else a.paths
    results = run_course(paths, a.out, fast=not a.learner, jobs=a.jobs, timeout=a.timeout, exercises=a.exercises,
                         python=a.python)
    failed = [r["failure"] for r in results.values() if r["failure"]]
    for failure in failed:
        print(f"\n{failure}")
    print(f"{len(results) - len(failed)} of {len(results)} notebooks ran; {sum(r['seconds'] for r in results.values()):.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
