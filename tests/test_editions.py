"""The course's two editions (tools/editions.py, `make editions`).

The student edition replaces every solution by a stub that raises NotImplementedError and drops the questionnaire
answers; the instructor edition keeps everything. Both clear outputs and never run `nbdev_export()`. The slow tests
run each edition top to bottom in fast mode (the session fixtures `executed_student` and `executed_course`, the latter
shared with tests/test_notebooks.py and the handouts): in the student edition every exercise's check must print its
hint for the stub, in the instructor edition every check must print its tick.
"""
from __future__ import annotations

import ast
import json
import re

import nbformat
import pytest

import editions
from conftest import ROOT, source_tree_digest
from editions import ANSWERS, BEGIN, END, STUB, EditionError, build, edition, is_export_cell, stub_solutions
from nbrun import notebooks

CHECK = re.compile(r"\bcheck_exercise\(")


def exercise_cells(nb) -> list[tuple[int, object]]:
    "The code cells holding a solution block (an exercise: its function(s) and its check)."
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and BEGIN in c.source]


def printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_stub_keeps_indentation_and_markers():
    src = "def f(x):\n    \"doc\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n\ncheck()"
    stubbed, blocks = stub_solutions(src)
    assert blocks == 1
    assert stubbed == f"def f(x):\n    \"doc\"\n    {BEGIN}\n    {STUB}\n    {END}\n\ncheck()"
    compile(stubbed, "<stub>", "exec")  # still Python
    assert stub_solutions("x = 1") == ("x = 1", 0)


@pytest.mark.parametrize("src, message", [(f"def f():\n    {BEGIN}\n    x = 1", "without an"), (f"x = 1\n{END}", "without a"),
                                          (f"def f():\n    {BEGIN}\n    {BEGIN}\n    {END}", "inside another")])
def test_unmatched_markers_are_an_error(src, message):
    with pytest.raises(EditionError, match=message):
        stub_solutions(src, "99_x.ipynb, cell 3")


def test_a_solution_outside_a_function_is_an_error():
    "A stub in a class body or at module level would raise when the cell runs, before the check could print its hint."
    in_class = f"class C:\n    def __init__(self): pass\n    {BEGIN}\n    def hook(self): pass\n    {END}\n"
    at_top = f"{BEGIN}\nx = 1\n{END}\n"
    for src in (in_class, at_top):
        with pytest.raises(EditionError, match="not inside a function body"):
            stub_solutions(src, "99_x.ipynb, cell 3")
    method = f"class C:\n    def hook(\n        self,\n    ) -> int:\n        \"doc\"\n        {BEGIN}\n        return 1\n        {END}\n"
    assert stub_solutions(method)[1] == 1  # a method's body, after a signature over several lines


def test_export_cell_is_recognised_and_never_mixed():
    code = nbformat.v4.new_code_cell
    assert is_export_cell(code("#| hide\nimport nbdev; nbdev.nbdev_export()"))
    assert is_export_cell(code("from nbdev import nbdev_export\nnbdev_export()"))
    assert not is_export_cell(code("x = 1")) and not is_export_cell(nbformat.v4.new_markdown_cell("nbdev_export()"))
    with pytest.raises(EditionError, match="shares its cell"):
        is_export_cell(code("import nbdev; nbdev.nbdev_export()\nprint('done')"))


def test_edition_of_a_planted_notebook():
    cells = [nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n"
                                       "check_exercise(lambda: f(), 'hint')", execution_count=3,
                                       outputs=[nbformat.v4.new_output("stream", text="✓")]),
             nbformat.v4.new_markdown_cell("## Questionnaire\n\n1. Why?"),
             nbformat.v4.new_markdown_cell(f"{ANSWERS}<summary>Answers</summary>\n\n1. Because.\n\n</details>"),
             nbformat.v4.new_code_cell("#| hide\nimport nbdev; nbdev.nbdev_export()")]
    nb = nbformat.v4.new_notebook(cells=cells)
    student, counts = edition(nb, student=True)
    assert counts == {"solutions": 1, "exercises": 1, "answers": 1}
    assert [c.cell_type for c in student.cells] == ["code", "markdown"]
    assert STUB in student.cells[0].source and "return 1" not in student.cells[0].source
    assert student.cells[0].outputs == [] and student.cells[0].execution_count is None
    teacher, _ = edition(nb, student=False)
    assert [c.source for c in teacher.cells] == [c.source for c in cells[:3]] and teacher.cells[0].outputs == []
    assert nb.cells[0].outputs and len(nb.cells) == 4, "the source notebook must be left unchanged"


def test_build_refuses_to_write_over_the_repository():
    for out in (ROOT, ROOT / "nbs", ROOT.parent):
        with pytest.raises(EditionError, match="overwrite"):
            build(out)


def test_every_exercise_has_a_check():
    "In nbs/: each exercise cell holds its check, so the editions' tests can find the check's output."
    for path in notebooks():
        for i, cell in exercise_cells(nbformat.read(path, as_version=4)):
            assert CHECK.search(cell.source), f"{path.name}, cell {i}: a solution with no check_exercise(...) in its cell"
            assert "#| export" not in cell.source, f"{path.name}, cell {i}: a solution in an exported cell"


def test_no_cell_code_outside_the_check_calls_an_exercise():
    "In the student edition the exercise's functions raise: a call outside its check would stop a learner's Run All."
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        for i, cell in exercise_cells(nb):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            stubbed = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                       and BEGIN in ast.get_source_segment(cell.source, n)]
            for node in tree.body:
                code = ast.get_source_segment(cell.source, node)
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) or CHECK.search(code):
                    continue
                used = [name for name in stubbed if re.search(rf"\b{name}\b", code)]
                assert not used, (f"{path.name}, cell {i}: `{code.splitlines()[0]}` calls {used} outside the check; "
                                  "move it into the check function, so the stub's hint is all a learner sees")


def test_built_editions(course_editions):
    "Every notebook in both editions; the student's without solutions, answers or export; files read beside them."
    summary = json.loads((course_editions / "summary.json").read_text())
    assert sorted(summary) == sorted(p.stem for p in notebooks())
    for path in notebooks():
        source = nbformat.read(path, as_version=4)
        student = nbformat.read(course_editions / "student" / path.name, as_version=4)
        teacher = nbformat.read(course_editions / "instructor" / path.name, as_version=4)
        for nb in (student, teacher):
            assert not any("nbdev_export(" in c.source for c in nb.cells if c.cell_type == "code"), path.name
            assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
        assert not any(c.source.lstrip().startswith(ANSWERS) for c in student.cells), path.name
        solutions = [c.source for _, c in exercise_cells(source)]
        assert [c.source for _, c in exercise_cells(teacher)] == solutions, path.name
        for (i, cell), original in zip(exercise_cells(student), solutions):
            stubbed, blocks = stub_solutions(original)
            assert cell.source == stubbed and cell.source.count(STUB) == blocks, f"{path.name}, cell {i}"
        assert summary[path.stem]["exercises"] == len(solutions), path.name
    assert (course_editions / "bench" / "results" / "train_speed-cpu.json").is_file()  # "../bench/results" from nbs/


@pytest.mark.slow
def test_student_edition_prints_every_hint(course_editions, executed_student):
    "Run All on the student edition: no error cell, and every exercise's check prints 'not written yet' and its hint."
    runs = json.loads((executed_student / "runs.json").read_text())
    failed = {name: r["failure"] for name, r in runs.items() if r["failure"]}
    assert not failed, "\n\n".join(failed.values())
    summary = json.loads((course_editions / "summary.json").read_text())
    hints = 0
    for name in summary:
        nb = nbformat.read(executed_student / f"{name}.ipynb", as_version=4)
        for i, cell in exercise_cells(nb):
            out, checks = printed(cell), len(CHECK.findall(cell.source))
            stubbed = re.findall(r"✗ [^\n]*: not written yet[^\n]*\n  Hint: \S", out)
            assert len(stubbed) == checks, f"{name}, cell {i}: {checks} check(s), {len(stubbed)} hint(s) for the stub:\n{out}"
            assert "✓" not in out, f"{name}, cell {i}: a stub passed its check:\n{out}"
            hints += len(stubbed)
    exercises = sum(c["exercises"] for c in summary.values())
    assert hints == exercises, f"{hints} hints printed for {exercises} exercises"
    print(f"{exercises} exercises ({sum(c['solutions'] for c in summary.values())} solution blocks): "
          f"{hints} hints printed for the stubs")


@pytest.mark.slow
def test_instructor_edition_passes_every_check(course_editions, executed_course):
    "Strict checks in the instructor run: each exercise's check prints its tick (a wrong solution fails the notebook)."
    runs = json.loads((executed_course / "runs.json").read_text())
    summary = json.loads((course_editions / "summary.json").read_text())
    for name in summary:
        if runs[name]["failure"]:
            continue  # tests/test_notebooks.py reports it, with the cell and the error
        nb = nbformat.read(executed_course / f"{name}.ipynb", as_version=4)
        for i, cell in exercise_cells(nb):
            ticks, checks = len(re.findall(r"✓ [^\n]*: correct\.", printed(cell))), len(CHECK.findall(cell.source))
            assert ticks == checks, f"{name}, cell {i}: {checks} check(s), {ticks} tick(s):\n{printed(cell)}"


@pytest.mark.slow
def test_running_the_editions_writes_nothing_into_the_repository(course_editions, executed_course, executed_student):
    "After both editions ran, trainkit/ and nbs/ are byte for byte what they were before."
    before = json.loads((course_editions / "source_digest.json").read_text())
    after = source_tree_digest()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"running the editions changed files in the repository: {changed}"


def test_command_line(tmp_path, capsys):
    assert editions.main(["--out", str(tmp_path / "ed"), "--only", "06_files"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"06_files\s+3\s+3\s+1", out) and "total" in out, out
    assert sorted(p.name for p in (tmp_path / "ed" / "student").iterdir()) == ["06_files.ipynb"]
    assert editions.main(["--out", str(tmp_path / "ed"), "--only", "no_such"]) == 1
