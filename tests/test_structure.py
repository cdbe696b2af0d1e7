"""The library's shape: no module uses another module's private names, no two modules import each other (directly
or round a longer loop), and the modules the Learner and the service need do not drag in the data-collection stack.

Read statically from the source (ast), so a lazy import inside a function counts as much as one at the top."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "trainkit"
MODULES = {p.stem: p for p in sorted(LIB.glob("*.py")) if p.stem not in ("_modidx", "__init__")}


def _imports(tree: ast.Module, me: str):
    "(module imported, names imported from it) for each import of another trainkit module, lazy ones included."
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                target = node.module.split(".")[0]
            elif node.module and node.module.startswith("trainkit."):
                target = node.module.split(".")[1]
            else:
                continue
            if target in MODULES and target != me:
                yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "trainkit" and len(parts) > 1 and parts[1] in MODULES and parts[1] != me:
                    yield parts[1], []


def _own_names(tree: ast.Module) -> set[str]:
    "Every name this module defines or assigns: functions, classes, variables, attributes it sets, parameters."
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.arg):
            own.add(node.arg)
    return own


def private_uses(source: str, me: str) -> list[str]:
    "What module `me` (given as source text) uses of other modules' private names."
    tree, bad = ast.parse(source), []
    for target, names in _imports(tree, me):
        bad += [f"{me} imports {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    own = _own_names(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and node.attr not in own and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            bad.append(f"{me} reads .{node.attr}, which it does not define (line {node.lineno})")
    return bad


def import_graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(ast.parse(p.read_text()), m)} for m, p in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    "Every import loop, each as the list of modules round it (depth-first search)."
    found, state = [], {}

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [])
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_across_modules(name):
    assert private_uses(MODULES[name].read_text(), name) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


# The checks must be able to fail: each catches the thing it looks for in a planted example.
def test_private_import_is_caught():
    assert private_uses("from .export import _read\n", "edge") == ["edge imports export._read"]
    assert private_uses("from trainkit.prep import MISSING, _OTHER\n", "edge") == ["edge imports prep._OTHER"]


def test_private_attribute_of_another_module_is_caught():
    src = "def f(learn):\n    return learn._batches(0)\n"
    assert private_uses(src, "tune") == ["tune reads ._batches, which it does not define (line 2)"]
    own = "class A:\n    def __init__(self): self._x = 1\n\ndef g(a):\n    return a._x\n"
    assert private_uses(own, "m") == []  # an attribute the module sets itself is its own


def test_a_cycle_is_caught():
    assert cycles({"learner": {"graphs"}, "graphs": {"learner"}, "core": set()}) == [["graphs", "learner", "graphs"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lazy_imports_count():
    tree = ast.parse("def f():\n    from trainkit.graphs import CudaGraphRunner\n")
    assert list(_imports(tree, "learner")) == [("graphs", ["CudaGraphRunner"])]


@pytest.mark.parametrize("module", ["trainkit.learner", "trainkit.serve", "trainkit.datasets", "trainkit.tune"])
def test_training_and_serving_do_not_import_the_collection_stack(module):
    "pandera and requests (and trainkit.data's http.server) are for collecting data; a Learner or a service never needs them."
    stack = ["pandera", "requests", "trainkit.data", "trainkit.clean"]
    stack += [] if module == "trainkit.serve" else ["http.server"]  # prometheus_client brings its own http.server
    code = (f"import sys, {module}\n"
            f"print(','.join(sorted(m for m in {stack!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} also imported {out.stdout.strip()}"
