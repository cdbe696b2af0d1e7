#!/usr/bin/env python3
"""Build the course's two editions from nbs/: the student edition and the instructor edition.

- student/: every solution (the lines between `### BEGIN SOLUTION` and `### END SOLUTION`) replaced by
  `raise NotImplementedError(...)` at the same indentation, the markers kept so a learner sees where to write; every
  questionnaire answer cell (a markdown cell starting with `<details class="answers">`) removed.
- instructor/: everything, solutions and answers included.

In both, outputs and execution counts are cleared and the chapter's closing `nbdev_export()` cell is dropped: opened
inside the repository (e.g. in _editions/), it would find pyproject.toml and export the notebook over trainkit/*.py — a
student's stubs included. Files the notebooks read relative to nbs/ (`"../bench/results"`) are copied beside the two
folders, so the same relative path works from either. `python tools/editions.py --out _editions` (or `make editions`).
"""
from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbrun import NBS, ROOT, notebooks  # noqa: E402

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: write your code here, in place of this line")'
ANSWERS = '<details class="answers">'
_EXPORT = re.compile(r"(import nbdev|from nbdev(\.\w+)* import nbdev_export|(nbdev\.)?nbdev_export\(\))(\s*;\s*|$)")
_RELATIVE = re.compile(r"""["']\.\./([\w./-]+)["']""")  # a path a cell reads relative to nbs/, e.g. "../bench/results"


class EditionError(ValueError):
    "A notebook the editions cannot be built from (unmatched markers, an export call mixed with other code)."


def _outside_functions(source: str) -> list[int]:
    "The line numbers (1-based) of BEGIN markers that do not sit at the body indentation of a function."
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython syntax (%magic, !shell): nothing to tell
        return []
    bodies = [(f.lineno, f.end_lineno, f.body[0].col_offset) for f in ast.walk(tree)
              if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
    lines = source.split("\n")
    return [n for n, line in enumerate(lines, 1) if line.strip() == BEGIN
            and not any(a < n <= b and len(line) - len(line.lstrip()) == col for a, b, col in bodies)]


def stub_solutions(
    source: str,  # a code cell's source
    where: str = "",  # "NB.ipynb, cell I", for error messages
) -> tuple[str, int]:
    "Replace each solution block's lines by the stub at the BEGIN marker's indentation; return (source, blocks)."
    if bad := _outside_functions(source):
        raise EditionError(f"{where}: the solution block at line {bad[0]} is not inside a function body, so its stub would "
                           "raise when the cell runs, before the check. Put it in the function (or method) the learner writes.")
    out, blocks, inside = [], 0, None
    for line in source.split("\n"):
        marker = line.strip()
        if marker == BEGIN:
            if inside is not None:
                raise EditionError(f"{where}: {BEGIN} inside another solution block")
            inside = line[: len(line) - len(line.lstrip())]
            out += [line, inside + STUB]
        elif marker == END:
            if inside is None:
                raise EditionError(f"{where}: {END} without a {BEGIN} above it")
            out.append(line); inside = None; blocks += 1
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise EditionError(f"{where}: {BEGIN} without an {END}")
    return "\n".join(out), blocks


def is_export_cell(
    cell,  # a notebook cell
    where: str = "",  # "NB.ipynb, cell I", for error messages
) -> bool:
    "True for the cell that runs `nbdev_export()`; an error if such a call shares its cell with other code."
    if cell.cell_type != "code" or "nbdev_export(" not in cell.source:
        return False
    code = [l.strip() for l in cell.source.split("\n") if l.strip() and not l.lstrip().startswith("#")]
    if not all(_EXPORT.sub("", l) == "" for l in code):
        raise EditionError(f"{where or cell.get('id', '?')}: nbdev_export() shares its cell with other code; give it its own cell")
    return True


def edition(
    nb,  # a notebook read with nbformat (left unchanged)
    student: bool,  # the student edition (stubs, no answers) or the instructor edition (everything)
    name: str = "",  # the notebook's file name, for error messages
):
    "The notebook as one edition holds it, and its counts: (notebook, {'solutions', 'exercises', 'answers'})."
    nb = nbformat.from_dict(nb)
    cells, counts = [], {"solutions": 0, "exercises": 0, "answers": 0}
    for index, cell in enumerate(nb.cells):
        if is_export_cell(cell, f"{name}, cell {index}"):
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
            stubbed, blocks = stub_solutions(cell.source, f"{name}, cell {index}")
            counts["solutions"] += blocks; counts["exercises"] += blocks > 0
            if student:
                cell.source = stubbed
        elif cell.cell_type == "markdown" and cell.source.lstrip().startswith(ANSWERS):
            counts["answers"] += 1
            if student:
                continue
        cells.append(cell)
    nb.cells = cells
    return nb, counts


def files_beside(names: list[Path]) -> list[str]:
    "The repository paths the notebooks read relative to nbs/ (`\"../bench/results\"`), the library itself excluded."
    found = set()
    for path in names:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                found |= {m for m in _RELATIVE.findall(cell.source)
                          if (ROOT / m).exists() and Path(m).parts[0] not in ("trainkit", "nbs")}
    return sorted(found)


def place_beside(
    rel: str,  # a path relative to the repository root, e.g. "bench/results" or ".venv-oracles/bin/python"
    out: Path,  # the editions' folder
) -> Path:
    "Copy `rel` into `out` (data the notebooks read); link a hidden top folder instead (a tool's venv works only in place)."
    top = Path(rel).parts[0]
    if top.startswith("."):
        target, source = out / top, ROOT / top
    else:
        target, source = out / rel, ROOT / rel
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if top.startswith("."):
        target.symlink_to(source, target_is_directory=True)
    else:
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    return target


def build(
    out: Path,  # the editions' folder: student/, instructor/ and the files the notebooks read beside them
    names: list[str] | None = None,  # notebook stems to build (e.g. ["00_core"]); every notebook of `src` if None
    src: Path = NBS,  # where the notebooks are
) -> dict[str, dict]:
    "Write both editions of each notebook into `out`; return each notebook's counts."
    paths = [p for p in notebooks(src) if names is None or p.stem in names]
    if names is not None and len(paths) != len(set(names)):
        raise EditionError(f"no such notebook in {src}: {sorted(set(names) - {p.stem for p in paths})}")
    out = Path(out).resolve()
    if out == ROOT or out in ROOT.parents or out == Path(src).resolve():
        raise EditionError(f"--out {out} would overwrite the repository; use a folder of its own, e.g. _editions")
    summary = {}
    for kind in ("student", "instructor"):
        shutil.rmtree(out / kind, ignore_errors=True)
        (out / kind).mkdir(parents=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for kind in ("student", "instructor"):
            made, counts = edition(nb, kind == "student", path.name)
            nbformat.write(made, out / kind / path.relative_to(src))
        summary[path.stem] = counts
    for rel in files_beside(paths):
        place_beside(rel, out)
    return summary


def main(argv: list[str] | None = None) -> int:
    "Command line: build the editions and print what each holds."
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for student/ and instructor/ (e.g. _editions)")
    ap.add_argument("--only", nargs="+", metavar="NB", help="notebook names to build (default: every notebook of nbs/)")
    a = ap.parse_args(argv)
    try:
        summary = build(a.out, a.only)
    except EditionError as e:
        print(f"editions: {e}", file=sys.stderr)
        return 1
    total = {k: sum(c[k] for c in summary.values()) for k in ("exercises", "solutions", "answers")}
    print(f"{'notebook':<24} exercises  solutions  answer cells")
    for name, c in summary.items():
        print(f"{name:<24} {c['exercises']:9}  {c['solutions']:9}  {c['answers']:12}")
    print(f"{'total':<24} {total['exercises']:9}  {total['solutions']:9}  {total['answers']:12}")
    print(f"{len(summary)} notebooks in {a.out}/student (solutions stubbed, answers removed, outputs cleared) "
          f"and {a.out}/instructor (everything, outputs cleared); neither runs nbdev_export().")
    return 0


if __name__ == "__main__":
    sys.exit(main())
