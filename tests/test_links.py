"""Every link and chapter reference in the course resolves.

Read statically from the text a learner reads: the notebooks (markdown cells, and the comments and docstrings of code
cells, which the docs and the library show too), README.md and docs/*.md. Three checks:

- a local link `[text](path)` (or an image) points at an existing file, relative to the file it is in; anchors are
  ignored, and so are links with a scheme (http:, https:, mailto:) and links inside code;
- a chapter reference in prose names an existing notebook: "Step 6f" -> 06f_*.ipynb, "Step 6" -> some 06*.ipynb,
  "Steps 4–5" and "Steps 6a–6e" -> every chapter in the range, "Chapter 8" -> some 08*.ipynb (the notebooks' numbers
  are the only chapter numbers);
- a notebook named in the text (`06c_edge`, `06_deployment.ipynb`, a path `nbs/05b_plots.ipynb`) exists.

So a chapter that is planned but not written (07–11 in the design) cannot be referred to as if it existed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"


def notebook_stems(folder: Path = NBS) -> set[str]:
    return {p.stem for p in folder.glob("*.ipynb")}


def sources() -> list[Path]:
    "The files a learner reads: every notebook, README.md, docs/*.md."
    return sorted(NBS.glob("*.ipynb")) + [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def texts(path: Path) -> list[tuple[str, str, bool]]:
    "(where, text, is_prose) for each piece of `path`: a notebook's cells, or the whole markdown file."
    if path.suffix != ".ipynb":
        return [(path.name, path.read_text(encoding="utf-8"), True)]
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(f"{path.name} cell {i} ({c['cell_type']}, id {c.get('id', '?')})", "".join(c["source"]),
             c["cell_type"] == "markdown") for i, c in enumerate(cells) if c["cell_type"] in ("markdown", "code")]


# --- links -----------------------------------------------------------------------------------------------------------
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def broken_links(text: str, base: Path) -> list[str]:
    "The local links in markdown `text` whose target does not exist, resolved from folder `base`."
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    bad = []
    for target in _LINK.findall(prose):
        path = unquote(target.split("#")[0].split("?")[0])
        if not path or _SCHEME.match(target):
            continue  # an anchor in the same page, or http(s)/mailto
        if path.startswith("/") or not (base / path).exists():
            bad.append(f"link ({target}) -> no file {path}")
    return bad


# --- chapter references ----------------------------------------------------------------------------------------------
_REF = r"\d{1,2}[a-z]?"
_JOIN = r"\s*(?:–|—|-|,|\band\b|\bor\b|\bto\b)\s*"
_CHAPTER_REF = re.compile(rf"\b(?:Steps?|[Cc]hapters?)\s+({_REF}(?:{_JOIN}{_REF}\b)*)\b")
_NOTEBOOK_NAME = re.compile(r"(?<![\w.-])(\d\d[a-z]?_[a-z][a-z0-9_]*)(?:\.ipynb)?\b")


def _parse(ref: str) -> tuple[int, str]:
    return int(ref.rstrip("abcdefghijklmnopqrstuvwxyz")), ref.lstrip("0123456789")


def _expand(first: str, last: str) -> list[str]:
    "A range's chapters: 6a–6e -> 6a..6e; 3–5 -> 3, 4, 5; 3–6a -> 3, 4, 5, 6a."
    (n1, l1), (n2, l2) = _parse(first), _parse(last)
    if n1 == n2 and l1 and l2:
        return [f"{n1}{chr(c)}" for c in range(ord(l1), ord(l2) + 1)]
    return [first] + [str(n) for n in range(n1 + 1, n2)] + [last]


def chapters_in(refs: str) -> list[str]:
    "Every chapter a reference names: '4–5' -> ['4', '5'], '3 and 4' -> ['3', '4'], '6a–6e' -> 6a, 6b, … 6e."
    parts = re.split(rf"({_JOIN})", refs)
    out, i = [], 0
    while i < len(parts):
        if i + 2 < len(parts) and parts[i + 1].strip() in ("–", "—", "-", "to"):
            out += _expand(parts[i], parts[i + 2])
            i += 4
        else:
            out.append(parts[i])
            i += 2
    return out


def chapter_exists(ref: str, stems: set[str]) -> bool:
    "'6f' needs a notebook 06f_*; '6' needs some 06*: 06_…, 06a_…"
    number, letter = _parse(ref)
    pattern = re.compile(rf"{number:02d}{letter}_" if letter else rf"{number:02d}[a-z]?_")
    return any(pattern.match(s) for s in stems)


def broken_references(text: str, stems: set[str]) -> list[str]:
    "The chapter references ('Step 6e', 'Chapter 8', 'Steps 4–5') and notebook names in `text` that name no notebook."
    bad = []
    for m in _CHAPTER_REF.finditer(text):
        missing = [r for r in chapters_in(m.group(1)) if not chapter_exists(r, stems)]
        if missing:
            bad.append(f"'{m.group(0)}' -> no notebook for {', '.join(missing)}")
    for m in _NOTEBOOK_NAME.finditer(text):
        if m.group(1) not in stems:
            bad.append(f"'{m.group(0)}' -> no notebook nbs/{m.group(1)}.ipynb")
    return bad


def problems(path: Path, stems: set[str] | None = None) -> list[str]:
    "Every broken link and reference in one file, each with where it is."
    stems = notebook_stems() if stems is None else stems
    out = []
    for where, text, is_prose in texts(path):
        found = broken_references(text, stems) + (broken_links(text, path.parent) if is_prose else [])
        out += [f"{where}: {p}" for p in found]
    return out


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.name)
def test_links_and_references_resolve(path):
    bad = problems(path)
    assert not bad, "\n".join(bad)


def test_index_and_sidebar_list_every_notebook():
    "A new chapter is linked from the index's table and listed in the docs sidebar; every sidebar entry exists."
    stems = notebook_stems()
    index = "".join(text for _, text, is_prose in texts(NBS / "index.ipynb") if is_prose)
    linked = set(re.findall(r"\]\(([\w-]+)\.ipynb\)", index))
    sidebar = set(re.findall(r"^\s*-\s*([\w-]+)\.ipynb\s*$", (NBS / "_quarto.yml").read_text(encoding="utf-8"), re.M))
    assert not stems - {"index"} - linked, f"not linked from index.ipynb: {sorted(stems - {'index'} - linked)}"
    assert not sidebar - stems, f"in nbs/_quarto.yml's sidebar but not in nbs/: {sorted(sidebar - stems)}"
    assert not stems - sidebar, f"missing from nbs/_quarto.yml's sidebar: {sorted(stems - sidebar)}"


def test_sources_cover_the_course():
    names = [p.name for p in sources()]
    assert "index.ipynb" in names and "README.md" in names and "12_pipeline.ipynb" in names, names


# The checker must be able to fail: planted mistakes are caught by the same functions, good text passes.
STEMS = {"00_core", "01a_data", "05_evaluation", "06a_export", "06b_registry", "06c_edge", "06d_monitor",
         "06f_serve", "12_pipeline", "index"}


@pytest.mark.parametrize("text", [
    "the service (Step 6e)", "see Chapter 8", "in chapter 7", "Steps 6a–6e built", "Steps 4–5 chose",
    "Step 1d splits", "`06_deployment.ipynb`", "as 06e_predictor shows", "# see 07_challenges",
    "Steps 5 and 7", "Steps 11 to 12",
])
def test_checker_catches_planted_references(text):
    assert broken_references(text, STEMS), f"{text!r} names a chapter that does not exist"


@pytest.mark.parametrize("text", [
    "Step 6f serves it", "Step 6 deploys", "Steps 6a–6d", "Step 1a", "Steps 5 and 6", "Step 12", "Step 0's folders",
    "06c_edge quantizes", "[06a](06a_export.ipynb)", "Step 6a's penguin MLP", "Steps 0–1a", "1,000 steps 2 times",
])
def test_checker_accepts_good_references(text):
    assert broken_references(text, STEMS) == []


def test_checker_catches_planted_links(tmp_path):
    (tmp_path / "here.ipynb").write_text("{}")
    text = ("[ok](here.ipynb#a-section) [web](https://example.org/x.ipynb) [mail](mailto:a@b.c) [top](#top)\n"
            "[missing](06_deployment.ipynb) ![picture](img/none.png) [abs](/etc/hosts)\n"
            "`[in code](nowhere.md)`\n```\n[in a fence](nowhere.md)\n```\n")
    bad = broken_links(text, tmp_path)
    assert len(bad) == 3, bad
    assert "06_deployment.ipynb" in bad[0] and "img/none.png" in bad[1] and "/etc/hosts" in bad[2], bad


def test_problems_names_the_file_and_cell(tmp_path):
    nb = tmp_path / "nbs" / "06x_demo.ipynb"
    nb.parent.mkdir()
    cells = [{"cell_type": "markdown", "id": "a1", "source": ["Fine: Step 6a.\n", "Broken: [x](../nope.md), Step 9."]}]
    nb.write_text(json.dumps({"cells": cells}))
    bad = problems(nb, STEMS)
    assert len(bad) == 2 and all(p.startswith("06x_demo.ipynb cell 0 (markdown, id a1)") for p in bad), bad
