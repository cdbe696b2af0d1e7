"""Handouts (tools/handouts.py): every chapter as one self-contained HTML page, readable offline.

The course is not executed again here: the pages are rendered from `executed_course` (conftest: the instructor edition,
executed once in fast mode for every test that needs it). Each page must exist, hold every figure its notebook drew,
load nothing (checked with an HTML parser and a CSS parser, not a regex), show no error and no warning, have its maths
rendered to MathML; the index must link every chapter, and the API page must document every exported name.
The renderer's pieces are also checked on a planted notebook, and the audit on a page planted with every kind of load.
"""
from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import handouts  # noqa: E402

# a 1x1 PNG
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f3d1a20000000049454e44ae426082")).decode()


def planted_notebook():
    "A notebook with one of everything the renderer handles, outputs and widget state included."
    v4 = nbformat.v4
    widget_state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_btn", "IPY_MODEL_bar", "IPY_MODEL_txt"]}},
        "btn": {"model_name": "ButtonModel", "state": {"description": "Train", "button_style": "success"}},
        "bar": {"model_name": "FloatProgressModel", "state": {"description": "done", "min": 0, "max": 10, "value": 10}},
        "txt": {"model_name": "HTMLModel", "state": {"value": "<b>3 runs</b><script>alert(1)</script>"}},
    }
    cells = [
        v4.new_markdown_cell("# A planted chapter\n\n> What it is about, in one line."),
        v4.new_code_cell("#| default_exp planted"),
        v4.new_markdown_cell("## Maths\n\nKappa, $\\kappa = \\frac{p_o - p_e}{1 - p_e}$, and a block:\n\n"
                             "$$\\sum_k a_k b_k$$\n\nSee [the core chapter](00_core.ipynb#fast-mode).\n\n"
                             "<details class=\"answers\"><summary>Answers</summary>\n\n1. Yes.\n\n</details>"),
        v4.new_code_cell("#| hide\nsecret_plumbing = 1"),
        v4.new_code_cell("#| export\ndef f(x): return x", outputs=[]),
        v4.new_code_cell("for i in range(3): print(i)", outputs=[
            v4.new_output("stream", name="stdout", text="progress 10%\rprogress 50%\rprogress 100%\nfinished\n"),
            v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
            v4.new_output("execute_result", execution_count=1, data={"text/html": (
                '<script src="https://cdn.example.org/x.js"></script><link rel="stylesheet" href="https://e.org/a.css">'
                '<style>@import url("https://e.org/b.css"); .t { background: url(https://e.org/c.png) }</style>'
                '<img src="https://e.org/d.png"><table class="t"><tr><td onclick="x()">1</td></tr></table>'),
                "text/plain": "table"})]),
        v4.new_code_cell("ui", outputs=[v4.new_output("execute_result", execution_count=2, data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2, "version_minor": 0},
            "text/plain": "HBox(...)"})]),
    ]
    cells[-2].metadata["jupyter"] = {"source_hidden": True}
    nb = v4.new_notebook(cells=cells)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": widget_state}}
    return nb


def test_renders_a_planted_notebook_self_contained():
    order = [("", "index"), ("Step", "00_core"), ("Step", "99_planted")]
    text = handouts.render_notebook(planted_notebook(), "99_planted", order, {"seconds": 1.0, "mode": "fast"},
                                    handouts.Markdown({"00_core", "99_planted"}))
    soup = BeautifulSoup(text, "html.parser")
    assert handouts.page_loads(text) == [], handouts.page_loads(text)
    assert soup.title.get_text() == "A planted chapter — trainkit"
    # maths became MathML, inline and block; no LaTeX left for a script to typeset
    assert soup.find("math", attrs={"display": "inline"}) and soup.find("math", attrs={"display": "block"})
    assert "$" not in " ".join(t.get_text() for t in soup.select(".cell.markdown"))
    # a link to a chapter points to its page; the answers stay folded
    assert soup.find("a", string="the core chapter")["href"] == "00_core.html#fast-mode"
    assert soup.select_one("details.answers summary").get_text() == "Answers"
    # hidden cells are left out, directives dropped, exported cells marked, collapsed cells folded
    assert "secret_plumbing" not in text and "#|" not in text
    assert "exported to trainkit.planted" in text
    assert soup.select_one("details.collapsed") is not None
    # the progress line shows what a terminal would: its last state
    stdout = soup.select_one(".output.stdout").get_text()
    assert "progress 100%" in stdout and "progress 10%" not in stdout
    # the figure, as a data: URI; the HTML output kept (the table) without what it would load or run
    assert [img["src"] for img in soup.find_all("img")] == [f"data:image/png;base64,{PNG}"]
    assert soup.find("td") is not None and not soup.find("td").has_attr("onclick")
    # the widget, drawn from its saved state without JavaScript
    widget = soup.select_one(".output.widget")
    assert handouts.WIDGET_NOTE in widget.get_text() and "Train" in widget.get_text() and "3 runs" in widget.get_text()
    assert widget.find("progress")["value"] == "10"


def test_audit_finds_every_kind_of_load():
    "A positive control: the audit's checker sees each way a page could reach the network, and passes plain links."
    planted = """<html><head><link rel="stylesheet" href="https://e.org/a.css"><script src="https://e.org/x.js"></script>
    <style>@import "https://e.org/b.css"; @font-face { font-family: F; src: url(https://e.org/f.woff2) }
    body { background: url('//e.org/bg.png') }</style></head><body>
    <iframe src="https://e.org/"></iframe><img src="https://e.org/i.png"><img src="data:image/png;base64,AAAA">
    <div style="background-image: url(https://e.org/s.png)"></div><video poster="https://e.org/p.png"></video>
    <a href="https://example.org/">a plain link is not a load</a><a href="#top">nor is an anchor</a></body></html>"""
    loads = " | ".join(handouts.page_loads(planted))
    for needle in ("<script>", "<iframe>", "<link href", "@import", "@font-face", "//e.org/bg.png", "<img src",
                   "s.png", "<video poster"):
        assert needle in loads, (needle, loads)
    assert "example.org" not in loads and "data:image" not in loads


def test_course_order_lists_every_notebook():
    "_quarto.yml's order first; a notebook it does not list yet (a chapter being written) still gets a place."
    stems = [p.stem for p in handouts.notebooks()]
    order = [s for _, s in handouts.course_order(stems + ["99_unlisted"])]
    assert order[0] == "index" and sorted(order) == sorted(stems + ["99_unlisted"]) and order[-1] == "99_unlisted"


@pytest.mark.slow  # renders the whole executed course: about a minute on 2 cores
def test_handouts_of_the_executed_course(executed_course, tmp_path):
    out = tmp_path / "handouts"
    result = handouts.build(out, source=executed_course, log=lambda *a: None)
    stems = [p.stem for p in handouts.notebooks()]
    problems = handouts.audit(out, executed_course, stems, stems, result["documented"])
    assert problems == [], "\n".join(problems)
    # every exported name of every module is on the API page
    import importlib
    for mod in sorted(p.stem for p in (ROOT / "trainkit").glob("*.py") if not p.stem.startswith("_")):
        for name in getattr(importlib.import_module(f"trainkit.{mod}"), "__all__", []):
            assert f"{mod}.{name}" in result["documented"], f"{mod}.{name}"
    # the pages are whole but not bloated: the largest chapter is a few MiB at most
    sizes = {p.name: p.stat().st_size for p in out.glob("*.html")}
    assert max(sizes.values()) < 8 * 2**20, sizes
    runs = json.loads((out / "runs.json").read_text())
    assert set(runs) >= set(stems) - {"index"} or not runs, sorted(set(stems) - set(runs))
