#!/usr/bin/env python3
"""The workshop guide, docs/workshop.md, generated from the notebooks so that it stays true.

For every notebook in nbs/ (by glob, in course order): its objective (the `> summary` under the title), its
prerequisites (the chapters its "You need" paragraph links to and the trainkit modules its code imports), its
learner-mode time on 2 CPU cores (its **Time:** line), GPU times where committed results exist (bench/results/*gpu*),
the widgets it shows and its `#| gpu` cells. Then three tracks (half day, full day, two days) with their chapters,
totals, widgets and GPU cells, and how fast mode serves a live demo.

    python tools/workshop.py            # write docs/workshop.md
    python tools/workshop.py --check    # exit 1 if docs/workshop.md is not what this script writes
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, OUT = ROOT / "nbs", ROOT / "docs" / "workshop.md"
DAY = 390  # minutes of teaching in a day: 9:00 to 17:00 less lunch and breaks
TRACKS = {  # the chapters each short track teaches, in course order (those that do not exist yet are left out)
    "half day": ["00a_setup", "00_core", "01d_prepare", "02_models", "03_training", "05_evaluation"],
    "full day": ["00a_setup", "00_core", "01a_data", "01d_prepare", "02_models", "03_training", "03b_callbacks",
                 "04_tuning", "05_evaluation", "06a_export", "06f_serve", "12_pipeline"],
}
BUDGET = {"half day": DAY // 2 + 15, "full day": DAY, "two days": 2 * DAY}  # minutes


@dataclass
class Chapter:
    "What the guide says about one notebook."
    stem: str
    title: str = ""
    summary: str = ""
    needs: list[str] = field(default_factory=list)  # chapter stems
    read_min: int = 0  # minutes to read, from the Time line
    run_text: str = "?"  # the Time line's run-time phrase, verbatim
    run_s: int = 0  # seconds to run in learner mode (the largest figure the Time line gives)
    widgets: list[str] = field(default_factory=list)
    gpu_cells: int = 0

    @property
    def minutes(self) -> int: return self.read_min + -(-self.run_s // 60)  # reading, plus the run rounded up


def chapters(folder: Path = NBS) -> list[Path]:
    "The chapters in course order: every notebook but the index and names nbdev skips (`_*`, `.*`)."
    return sorted(p for p in folder.glob("*.ipynb") if p.stem != "index" and not p.name.startswith(("_", ".")))


_UNITS = {"second": 1, "seconds": 1, "minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}
_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "ten": 10}


def run_seconds(phrase: str) -> int:
    "The largest duration a Time phrase names, in seconds: 'about 20 seconds' -> 20, '2 to 4 minutes' -> 240."
    best = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?|a|an|one|two|three|four|five|ten)(?:\s+to\s+(\d+(?:\.\d+)?))?\s+"
                         r"(seconds?|minutes?|hours?)\b", phrase):
        n = float(m.group(2) or (_WORDS.get(m.group(1)) or m.group(1)))
        best = max(best, round(n * _UNITS[m.group(3)]))
    m = re.search(r"\b(\d+)\s*s\b", phrase)  # "22 s measured"
    return max(best, int(m.group(1)) if m else 0)


def module_owners(folder: Path = NBS) -> dict[str, str]:
    "trainkit module -> the notebook that exports it (its `#| default_exp`)."
    owners = {}
    for p in sorted(folder.glob("*.ipynb")):
        for c in json.loads(p.read_text(encoding="utf-8"))["cells"]:
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(c["source"]), re.M)
            if c["cell_type"] == "code" and m:
                owners[m.group(1)] = p.stem
                break
    return owners


def read_chapter(path: Path, owners: dict[str, str], order: list[str]) -> Chapter:
    "Parse one notebook into a Chapter."
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    md = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    ch = Chapter(path.stem)
    head = md[0] if md else ""
    if m := re.search(r"^#\s+(.+)$", head, re.M): ch.title = m.group(1).strip()
    if m := re.search(r"^>\s*(.+?)(?:\n\n|\Z)", head, re.M | re.S):
        ch.summary = " ".join(re.sub(r"(?m)^>\s?", "", m.group(1)).split())
    text = "\n\n".join(md)
    needs = set()
    if m := re.search(r"\*\*You need\*\*(.*?)(?:\n\n|\Z)", text, re.S):
        needs |= set(re.findall(r"\(([\w-]+)\.ipynb\)", m.group(1)))
    for src in code:
        needs |= {owners[mod] for mod in re.findall(r"from trainkit\.(\w+) import", src) if mod in owners}
    ch.needs = sorted((n for n in needs if n in order and order.index(n) < order.index(ch.stem)), key=order.index)
    if m := re.search(r"\*\*Time:?\*\*:?\s*(.*?)(?:\n\n|\Z)", text, re.S):
        line = " ".join(m.group(1).split())
        if r := re.search(r"about ([\d½]+) minutes? to read", line): ch.read_min = int(r.group(1).replace("½", ""))
        if r := re.search(r"runs in (.*?)(?:\.\s|\.$|$)", line): ch.run_text, ch.run_s = r.group(1), run_seconds(r.group(1))
    widgets, every = set(), "\n".join(code)
    for name in library_widgets():  # "Labeler.widget": the class's widget method; "threshold_widget": a function
        cls, _, fn = name.rpartition(".")
        if (cls and re.search(rf"\b{cls}\b", every) and ".widget(" in every) or (not cls and f"{fn}(" in every):
            widgets.add(name)
    for src in code:
        if m := re.search(r"from ipywidgets import ([\w, ()]+)", src):
            widgets |= {f"ipywidgets.{w.strip()}" for w in m.group(1).strip("()").split(",") if w.strip()}
    ch.widgets = sorted(widgets)
    ch.gpu_cells = sum(bool(GPU_CELL.search(src)) for src in code)
    return ch


GPU_CELL = re.compile(r"^#\|\s*gpu\b|cuda\.is_available\(\)|\.type\s*==\s*[\"']cuda[\"']", re.M)


def library_widgets(lib: Path = ROOT / "trainkit") -> list[str]:
    "The widgets trainkit defines: `Class.widget` for a widget method added with @patch, else the function's name."
    found = []
    for p in sorted(lib.glob("*.py")):
        for m in re.finditer(r"^def (\w*widget)\((?:self: (\w+))?", p.read_text(encoding="utf-8"), re.M):
            found.append(f"{m.group(2)}.{m.group(1)}" if m.group(2) else m.group(1))
    return found


def reduce_needs(chs: list[Chapter]) -> list[Chapter]:
    "Keep only direct prerequisites: drop a chapter another prerequisite already needs (00_core, needed by all)."
    by = {c.stem: c for c in chs}
    def closure(stem, seen=None):
        seen = set() if seen is None else seen
        for n in by[stem].needs:
            if n not in seen:
                seen.add(n)
                closure(n, seen)
        return seen
    for c in chs:
        implied = set().union(*(closure(n) for n in c.needs)) if c.needs else set()
        c.needs = [n for n in c.needs if n not in implied]
    return chs


def gpu_results(root: Path = ROOT) -> list[str]:
    "One line per committed GPU result file (bench/results/*gpu*): its name and, for a gpu-check summary, the steps."
    lines = []
    for p in sorted((root / "bench" / "results").glob("*gpu*")):
        if p.name.endswith("summary.txt"):
            steps = [" ".join(l.split()) for l in p.read_text().splitlines() if re.match(r"\w[\w-]*\s+rc=", l)]
            lines.append(f"[{p.name}](../bench/results/{p.name}): " + "; ".join(steps) + ".")
    return lines


def fmt_min(minutes: int) -> str:
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def fmt_s(seconds: int) -> str:
    return f"{seconds} s" if seconds < 90 else f"{-(-seconds // 60)} min"


def link(stem: str) -> str:
    return f"[{stem}](../nbs/{stem}.ipynb)"


def tracks(chs: list[Chapter]) -> dict[str, tuple[list[Chapter], list[Chapter]]]:
    "track -> (chapters taught, chapters left as homework). Two days: every chapter, the last ones to homework if over."
    by = {c.stem: c for c in chs}
    out = {name: ([by[s] for s in stems if s in by], []) for name, stems in TRACKS.items()}
    taught, homework = list(chs), []
    keep = set(TRACKS["full day"])
    while sum(c.minutes for c in taught) > BUDGET["two days"]:
        last = next(c for c in reversed(taught) if c.stem not in keep)
        taught.remove(last)
        homework.insert(0, last)
    out["two days"] = (taught, homework)
    return out


def render(folder: Path = NBS, root: Path = ROOT) -> str:
    "The whole docs/workshop.md."
    paths = chapters(folder)
    order, owners = [p.stem for p in paths], module_owners(folder)
    chs = reduce_needs([read_chapter(p, owners, order) for p in paths])
    gpu = gpu_results(root)
    out = ["# Workshop guide", "",
           "*Generated by `tools/workshop.py` from the notebooks (their summaries, **You need** and **Time:** lines, "
           "imports, widgets and `#| gpu` cells); `tests/test_workshop.py` checks it is up to date. "
           "Do not edit by hand: run `.venv/bin/python tools/workshop.py`.*", "",
           "Times are per chapter: *read* is the chapter's reading time, *run* its learner-mode run time "
           "(`TRAINKIT_FAST=0`, Jupyter's Run All) measured on 2 CPU cores, as its **Time:** line states it; "
           "a track's total adds both, each run rounded up to the minute. "
           "Every learner needs Python (functions, classes, `with` blocks) and a little NumPy; the chapters say "
           "what else in their **You need** line.", "",
           "**GPU.** Per-chapter GPU times: no GPU run committed yet. "
           + ("Committed GPU results for the whole course: " + " ".join(gpu) if gpu else "No GPU results committed.")
           + " *GPU-aware cells* are those that do something else on a GPU: cells flagged `#| gpu` (skipped on a CPU) "
           "and cells that test `torch.cuda.is_available()` or `device.type == \"cuda\"` (on a CPU they say what a GPU "
           "would do, or show committed GPU results).", "",
           "## Chapters", "",
           "| chapter | objective | needs | read | run (CPU) | widgets | GPU-aware cells |", "|---|---|---|---|---|---|---|"]
    for c in chs:
        out.append(f"| {link(c.stem)} | {c.summary.replace('|', '/')} | {', '.join(c.needs) or '—'} | "
                   f"{c.read_min} min | {c.run_text} | {', '.join(f'`{w}`' for w in c.widgets) or '—'} | "
                   f"{c.gpu_cells or '—'} |")
    out.append(f"| **all {len(chs)}** | | | {fmt_min(sum(c.read_min for c in chs))} | "
               f"{fmt_min(-(-sum(c.run_s for c in chs) // 60))} | | {sum(c.gpu_cells for c in chs)} |")
    out += ["", "## Tracks", "",
            f"Budgets: half a day {fmt_min(BUDGET['half day'])}, a day {fmt_min(DAY)} of teaching "
            "(9:00 to 17:00 less lunch and breaks), two days twice that. Every track includes "
            f"{link('00a_setup')}: have every learner run `trainkit doctor` (or the first cell of the index) before the "
            "workshop, and fix what it reports.", ""]
    for name, (taught, homework) in tracks(chs).items():
        total = sum(c.minutes for c in taught)
        widgets = sorted({w for c in taught for w in c.widgets})
        gpu_chs = [f"{c.stem} ({c.gpu_cells})" for c in taught if c.gpu_cells]
        out += [f"### {name.capitalize()} — {fmt_min(total)} of {fmt_min(BUDGET[name])}", "",
                " → ".join(link(c.stem) for c in taught), "",
                f"- reading {fmt_min(sum(c.read_min for c in taught))}, running "
                f"{fmt_s(sum(c.run_s for c in taught))} in learner mode on 2 CPU cores",
                f"- widgets: {', '.join(f'`{w}`' for w in widgets) or 'none'}",
                f"- GPU-aware cells: {', '.join(gpu_chs) or 'none'}"]
        if homework:
            out.append(f"- homework (over the budget): {', '.join(link(c.stem) for c in homework)}")
        out.append("")
    out += ["## Fast mode for a live demo", "",
            "`TRAINKIT_FAST=1` makes every chapter run small (fewer epochs, smaller searches, fewer trials), "
            "within a budget of 60 s per chapter on 2 cores, so an instructor can run a whole chapter live "
            "while talking through it:", "",
            "```bash", "TRAINKIT_FAST=1 .venv/bin/jupyter lab nbs/", "```", "",
            "- The printed numbers are fast mode's, not the ones the prose quotes: the prose says \"about\" or "
            "refers to the printed line. Show the learner-mode numbers from the handouts (`make handouts`), "
            "which are executed in learner mode.",
            "- Widgets work the same in fast mode; the tuning panel trains for fewer epochs.",
            "- Learners then run the chapter themselves in learner mode (the default in Jupyter), in the times above.",
            "- Fast mode is also what `nbdev-test` uses, so a demo machine that passes `make test` runs every demo.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write docs/workshop.md from the notebooks.")
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/workshop.md differs from what would be written")
    ap.add_argument("--out", type=Path, default=OUT, help="where to write (default docs/workshop.md)")
    a = ap.parse_args(argv)
    text = render()
    if a.check:
        same = a.out.is_file() and a.out.read_text(encoding="utf-8") == text
        print("docs/workshop.md is up to date." if same else "docs/workshop.md is out of date: run tools/workshop.py")
        return 0 if same else 1
    a.out.write_text(text, encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
