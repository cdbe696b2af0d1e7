#!/usr/bin/env python3
"""Handouts: every chapter executed and rendered to one self-contained HTML page, readable offline.

    python tools/handouts.py --out _handouts            # execute the course in learner mode, then render (make handouts)
    python tools/handouts.py --out _handouts --fast     # fast mode (CI, a quick look)
    python tools/handouts.py --out DIR --from EXECUTED  # render notebooks executed elsewhere (tools/nbrun.py's output)
    python tools/handouts.py --out DIR --only 00_core 06_files   # a few chapters (the index and API page still list all)

Writes DIR/NB.html per notebook (index.ipynb becomes index.html, with the chapters listed in _quarto.yml's order),
DIR/api.html (every name in every trainkit module's `__all__`, rendered by nbdev's own `show_doc`: signature with the
documented parameters, docstring) and DIR/runs.json (seconds and mode per notebook). A page loads nothing: images are
data: URIs, the CSS is inline, maths is MathML (latex2mathml; browsers draw it natively), there is no JavaScript, and
a widget is drawn, without JavaScript, from the state it had when its notebook finished. At the end every page is
audited (`audit`): the same checks tests/test_handouts.py makes; any problem makes the exit status 1.

The notebooks run with tools/nbrun.py (the course's one runner) as the instructor edition (tools/editions.py: everything,
minus the final `nbdev_export()` cell) in a temporary folder, so nothing they write touches the working tree.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import html
import importlib
import inspect
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # nbrun, beside this file

WIDGET_NOTE = ("Interactive widget, drawn as it was when the notebook finished running. "
               "Open the notebook in JupyterLab to use it.")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DIRECTIVE = re.compile(r"^\s*#\|\s*(\S+)(.*)$")


# ---------------------------------------------------------------- the course's notebooks and their order

def notebooks(folder: Path = NBS) -> list[Path]:
    "Every notebook under `folder`, skipping names nbdev skips (starting with `_` or `.`), sorted by name."
    return sorted(p for p in Path(folder).rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts))


def course_order(stems: list[str], quarto: Path = NBS / "_quarto.yml") -> list[tuple[str, str]]:
    "(section, stem) for every stem: _quarto.yml's sidebar order first, then any notebook it does not list, by name."
    import yaml
    order: list[tuple[str, str]] = []

    def walk(items, section):
        for item in items or []:
            if isinstance(item, str):
                order.append((section, Path(item).stem))
            elif isinstance(item, dict):
                walk(item.get("contents"), item.get("section", section))

    try:
        walk(yaml.safe_load(quarto.read_text())["website"]["sidebar"]["contents"], "")
    except (OSError, KeyError, TypeError):
        pass
    listed = [(s, n) for s, n in order if n in stems]
    seen = {n for _, n in listed}
    return listed + [("More chapters", n) for n in sorted(stems) if n not in seen]


def chapter_summary(nb) -> tuple[str, str]:
    "A notebook's title (its first `# ` heading) and its one-line description (the blockquote under the title)."
    title, desc = "", ""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if not title and line.startswith("# "):
                title = line[2:].strip()
            elif title and line.startswith(">") and not desc:
                desc = line.lstrip("> ").strip()
            elif title and desc and line.startswith(">"):
                desc += " " + line.lstrip("> ").strip()
        if title:
            return title, desc
    return title, desc


def module_chapters(folder: Path = NBS) -> dict[str, str]:
    "Which notebook writes each trainkit module: {'core': '00_core', ...} (the first `#| default_exp` seen)."
    import nbformat
    found: dict[str, str] = {}
    for path in notebooks(folder):
        for cell in nbformat.read(path, as_version=4).cells:
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", cell.source, re.M) if cell.cell_type == "code" else None
            if m:
                found.setdefault(m.group(1), path.stem)
    return found


# ---------------------------------------------------------------- markdown and maths

def math_html(tex: str, block: bool) -> str:
    "LaTeX as MathML (drawn natively by every current browser); the source in <code> if latex2mathml cannot parse it."
    from latex2mathml.converter import convert
    try:
        return convert(tex.strip(), display="block" if block else "inline")
    except Exception:  # an unsupported command: show the source rather than fail the page
        return f'<code class="math-fallback">{html.escape(tex)}</code>'


def slug(text: str) -> str:
    "A heading's anchor, from its text without tags."
    text = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "section"


class Markdown:
    "Markdown (tables, maths, raw HTML as Jupyter renders it) to HTML; links to a rendered notebook point to its page."

    def __init__(self, pages: set[str] = frozenset()):  # the stems that have a page
        import mistune
        pages_ = set(pages)

        class Renderer(mistune.HTMLRenderer):
            headings: list[tuple[int, str, str]] = []

            def heading(self, text, level, **attrs):
                anchor = slug(text)
                self.headings.append((level, anchor, text))
                return f'<h{level} id="{anchor}">{text}</h{level}>\n'

            def link(self, text, url, title=None):
                m = re.match(r"^(?:\./)?([\w.-]+)\.ipynb(#.*)?$", url)
                if m and m.group(1) in pages_:
                    url = f"{m.group(1)}.html{m.group(2) or ''}"
                return super().link(text, url, title)

            def image(self, text, url, title=None):
                path = (NBS / url).resolve() if not re.match(r"^[a-z]+:", url) else None
                if path and path.is_file():  # a picture from the repository: embedded, so the page stays whole
                    mime = {".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                            ".gif": "image/gif"}.get(path.suffix.lower(), "image/png")
                    url = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
                return super().image(text, url, title)

            def block_code(self, code, info=None):
                return f'<div class="input">{highlight(code, (info or "").split(" ")[0])}</div>\n'

        self.renderer = Renderer(escape=False)
        self.md = mistune.create_markdown(renderer=self.renderer, escape=False,
                                          plugins=["math", "table", "strikethrough", "url"])
        self.renderer.register("block_math", lambda r, text: math_html(text, True) + "\n")
        self.renderer.register("inline_math", lambda r, text: math_html(text, False))

    def __call__(self, text: str) -> str:
        return self.md(text)

    def take_headings(self) -> list[tuple[int, str, str]]:
        "The headings rendered since the last call: (level, anchor, text)."
        found, self.renderer.headings[:] = list(self.renderer.headings), []
        return found


def highlight(code: str, language: str = "python") -> str:
    "Code coloured by Pygments (classes styled by the inline CSS); plain text for a language it does not know."
    from pygments import highlight as pyg
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer, get_lexer_by_name
    from pygments.util import ClassNotFound
    try:
        lexer = get_lexer_by_name(language) if language and language != "python" else PythonLexer()
    except ClassNotFound:
        lexer = get_lexer_by_name("text")
    return pyg(code.rstrip("\n"), lexer, HtmlFormatter(cssclass="highlight"))


# ---------------------------------------------------------------- outputs

def clean_html(fragment: str) -> str:
    "An output's HTML without anything that runs or loads: no script, iframe, link, object; no on* handler; no remote src."
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(fragment, "html.parser")
    for tag in soup.find_all(["script", "iframe", "link", "object", "embed", "base", "meta", "noscript"]):
        tag.decompose()
    for tag in soup.find_all(["img", "source", "video", "audio", "track", "input"]):
        if tag.get("src") and not str(tag["src"]).startswith("data:"):  # a picture from elsewhere: nothing to show
            tag.decompose()
    for tag in soup.find_all(True):
        for attr in list(tag.attrs):
            value = tag.attrs[attr]
            value = " ".join(value) if isinstance(value, list) else str(value)
            if attr.lower().startswith("on"):
                del tag.attrs[attr]
            elif attr.lower() in ("src", "srcset", "poster", "data", "background") and not value.startswith("data:"):
                del tag.attrs[attr]
            elif attr.lower() == "href" and tag.name != "a":
                del tag.attrs[attr]
            elif attr.lower() == "style" and re.search(r"url\s*\(|@import", value, re.I):
                del tag.attrs[attr]
    for style in soup.find_all("style"):
        style.string = re.sub(r"@import[^;]*;|url\s*\([^)]*\)", "none", style.get_text())
    return str(soup)


def terminal_text(text: str) -> str:
    "What a terminal would show: colours dropped, and each line's carriage-return rewrites (progress bars) collapsed."
    text = _ANSI.sub("", text)
    return "\n".join(line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
                     for line in text.split("\n"))


def _widget_html(model_id: str, state: dict, md: Markdown, depth: int = 0) -> str:
    "One widget model drawn as static HTML, its children recursively."
    model = state.get(model_id)
    if model is None or depth > 20:
        return ""
    name, s = model.get("model_name", ""), model.get("state", {})
    desc = html.escape(str(s.get("description") or ""))
    label = f'<span class="desc">{desc}</span>' if desc else ""
    kids = lambda: "".join(_widget_html(c.removeprefix("IPY_MODEL_"), state, md, depth + 1)  # noqa: E731
                           for c in s.get("children", []))
    if name in ("VBoxModel", "BoxModel", "GridBoxModel", "AccordionModel", "TabModel", "StackModel"):
        return f'<div class="w-vbox">{kids()}</div>'
    if name == "HBoxModel":
        return f'<div class="w-hbox">{kids()}</div>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f'<span class="w-control">{label}<span>{clean_html(str(s.get("value", "")))}</span></span>'
    if name in ("LabelModel", "TextModel", "TextareaModel", "IntTextModel", "FloatTextModel", "BoundedIntTextModel",
                "BoundedFloatTextModel", "CheckboxModel", "ValidModel", "ToggleButtonModel"):
        return f'<span class="w-control">{label}<code>{html.escape(str(s.get("value", "")))}</code></span>'
    if name in ("FloatProgressModel", "IntProgressModel"):
        lo, hi, v = (float(s.get(k, 0) or 0) for k in ("min", "max", "value"))
        return (f'<span class="w-control">{label}<progress value="{v - lo:g}" max="{max(hi - lo, 1e-12):g}">'
                f'{v:g}</progress></span>')
    if name.endswith("SliderModel"):
        value = s.get("value")
        if name == "FloatLogSliderModel" and isinstance(value, (int, float)):
            shown = f"{value:.3g}"
        elif isinstance(value, list):
            shown = " – ".join(f"{v:g}" for v in value)
        else:
            shown = f"{value:g}" if isinstance(value, (int, float)) else html.escape(str(value))
        return f'<span class="w-control">{label}<input type="range" disabled aria-label="{desc}"> <b>{shown}</b></span>'
    if name in ("DropdownModel", "SelectModel", "RadioButtonsModel", "ToggleButtonsModel", "SelectionSliderModel"):
        options, index = s.get("_options_labels", []), s.get("index")
        chosen = options[index] if isinstance(index, int) and 0 <= index < len(options) else "(none)"
        return f'<span class="w-control">{label}<code>{html.escape(str(chosen))}</code></span>'
    if name == "ButtonModel":
        style = html.escape(s.get("button_style") or "")
        return f'<span class="w-button {style}">{desc or html.escape(str(s.get("icon", "")))}</span>'
    if name == "ImageModel":
        data = next((b.get("data", "") for b in model.get("buffers", []) if b.get("path") == ["value"]), "")
        fmt = html.escape(s.get("format") or "png")
        return f'<img alt="widget image" src="data:image/{fmt};base64,{data}">' if data else ""
    if name == "OutputModel":
        return render_outputs(s.get("outputs", []), state, md)
    return f'<code class="w-unknown">{html.escape(name)}</code>'


def render_outputs(outputs: list, widgets: dict, md: Markdown) -> str:
    "A code cell's outputs as HTML, the richest form each one has."
    parts, streams = [], []

    def flush():
        if streams:
            name, text = streams[0][0], terminal_text("".join(t for _, t in streams))
            text = re.sub(r"^/\S*/ipykernel_\d+/\d+\.py:\d+: ", "", text, flags=re.M)  # a warning's temp-file prefix
            parts.append(f'<div class="output {name}"><pre>{html.escape(text)}</pre></div>')
            streams.clear()

    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            if streams and streams[0][0] != out.get("name"):
                flush()
            streams.append((out.get("name", "stdout"), out.get("text", "")))
            continue
        flush()
        if kind == "error":
            tb = terminal_text("\n".join(out.get("traceback", [])) or f"{out.get('ename')}: {out.get('evalue')}")
            parts.append(f'<div class="output error"><pre>{html.escape(tb)}</pre></div>')
            continue
        data, meta = out.get("data", {}), out.get("metadata", {})
        view = data.get("application/vnd.jupyter.widget-view+json")
        if view and view.get("model_id") in widgets:
            body = _widget_html(view["model_id"], widgets, md)
            parts.append(f'<div class="output widget"><div class="note">{WIDGET_NOTE}</div>{body}</div>')
        elif view:  # no saved state: the text the kernel gave, and the note
            parts.append(f'<div class="output widget"><div class="note">{WIDGET_NOTE}</div>'
                         f'<pre>{html.escape(str(data.get("text/plain", "")))}</pre></div>')
        elif "text/html" in data:
            parts.append(f'<div class="output html">{clean_html(_text(data["text/html"]))}</div>')
        elif "image/svg+xml" in data:
            svg = base64.b64encode(_text(data["image/svg+xml"]).encode()).decode()
            parts.append(f'<div class="output"><img alt="figure" src="data:image/svg+xml;base64,{svg}"></div>')
        elif any(k in data for k in ("image/png", "image/jpeg", "image/gif", "image/webp")):
            mime = next(k for k in ("image/png", "image/jpeg", "image/gif", "image/webp") if k in data)
            size = meta.get(mime, {}) if isinstance(meta.get(mime), dict) else {}
            dims = "".join(f' {k}="{int(size[k])}"' for k in ("width", "height") if k in size)
            alt = html.escape(_text(data.get("text/plain", "figure")))
            parts.append(f'<div class="output"><img alt="{alt}"{dims} src="data:{mime};base64,'
                         f'{_text(data[mime]).strip()}"></div>')
        elif "text/markdown" in data:
            parts.append(f'<div class="output markdown">{clean_html(md(_text(data["text/markdown"])))}</div>')
        elif "text/latex" in data:
            tex = _text(data["text/latex"]).strip().strip("$")
            parts.append(f'<div class="output">{math_html(tex, True)}</div>')
        elif "text/plain" in data:
            parts.append(f'<div class="output"><pre>{html.escape(terminal_text(_text(data["text/plain"])))}</pre></div>')
    flush()
    return "".join(parts)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


# ---------------------------------------------------------------- cells and pages

def directives(source: str) -> dict[str, str]:
    "The cell's nbdev directives ({'export': '', 'default_exp': 'core', ...})."
    return {m.group(1): m.group(2).strip() for line in source.splitlines() if (m := _DIRECTIVE.match(line))}


def render_cell(cell, widgets: dict, md: Markdown, module: str | None) -> str:
    "One cell as the docs show it: markdown rendered; code highlighted without its `#|` lines (hide cells left out)."
    if cell.cell_type == "markdown":
        return f'<div class="cell markdown">{md(cell.source)}</div>\n'
    if cell.cell_type != "code":
        return ""
    flags = directives(cell.source)
    if "hide" in flags:
        return ""
    code = "\n".join(line for line in cell.source.splitlines() if not _DIRECTIVE.match(line)).strip("\n")
    outputs = render_outputs(cell.get("outputs", []), widgets, md)
    if not code and not outputs:
        return ""
    src = ""
    if code:
        badge = ""
        if module and ({"export", "exports"} & set(flags)):
            badge = f'<span class="badge">exported to trainkit.{html.escape(module)}</span>'
        elif module and "exporti" in flags:
            badge = f'<span class="badge">exported to trainkit.{html.escape(module)} (internal)</span>'
        src = f'<div class="input">{badge}{highlight(code)}</div>'
        if cell.metadata.get("jupyter", {}).get("source_hidden"):
            lines = [ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith(("@", "#"))]
            first = next((ln for ln in lines if ln.lstrip().startswith(("def ", "class "))), lines[0] if lines else "")[:80]
            src = (f'<details class="collapsed"><summary>Code collapsed in the notebook: '
                   f'<code>{html.escape(first)}</code> …</summary>{src}</details>')
    return f'<div class="cell code">{src}{outputs}</div>\n'


def page(title: str, body: str, nav: str, footer: str) -> str:
    "A whole HTML document: inline CSS (the page's and Pygments'), no script, nothing to load."
    from pygments.formatters import HtmlFormatter
    css = (HERE / "handouts" / "page.css").read_text() + HtmlFormatter(style="default").get_style_defs(".highlight")
    css += "\n.highlight { background: transparent; }\n"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{css}\n</style>\n</head>\n<body>\n"
            f'<header class="site">{nav}</header>\n<main>\n{body}\n</main>\n'
            f'<footer class="site">{footer}</footer>\n</body>\n</html>\n')


def site_nav(stem: str, order: list[tuple[str, str]]) -> str:
    "The header: the course, the index, the previous and next chapters, the API reference."
    stems = [n for _, n in order]
    links = ['<span class="brand">trainkit handouts</span>', '<a href="index.html">Contents</a>']
    if stem in stems:
        i = stems.index(stem)
        if i > 0:
            links.append(f'<a href="{stems[i - 1]}.html">← {stems[i - 1]}</a>')
        if i + 1 < len(stems):
            links.append(f'<a href="{stems[i + 1]}.html">{stems[i + 1]} →</a>')
    links.append('<a href="api.html">API reference</a>')
    return " ".join(links)


def run_footer(stem: str, run: dict | None) -> str:
    "Where the page came from and how it ran."
    when = datetime.date.today().isoformat()
    how = "not executed" if not run else (f"executed in {run.get('mode', '?')} mode in {run.get('seconds', 0):.0f} s")
    return (f"Rendered {when} from <code>nbs/{html.escape(stem)}.ipynb</code>, {how}. "
            "Run it yourself: <code>jupyter lab nbs/</code>. Generated by <code>tools/handouts.py</code>.")


def render_notebook(nb, stem: str, order: list[tuple[str, str]], run: dict | None, md: Markdown) -> str:
    "A chapter's page: a contents box of its sections, then every cell, then where it came from."
    widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    module, cells = None, []
    md.take_headings()
    for cell in nb.cells:
        if cell.cell_type == "code":
            module = directives(cell.source).get("default_exp") or module
        cells.append(render_cell(cell, widgets, md, module))
    sections = [(a, t) for level, a, t in md.take_headings() if level == 2]
    toc = ""
    if len(sections) >= 3:
        items = "".join(f'<li><a href="#{a}">{t}</a></li>' for a, t in sections)
        toc = f'<nav class="page-toc"><b>In this chapter</b><ul>{items}</ul></nav>'
    banner = ""
    if run and run.get("failure"):
        banner = (f'<div class="banner"><b>This notebook stopped with an error</b>; the cells after it did not run.'
                  f'<pre>{html.escape(run["failure"][-2000:])}</pre></div>')
    body = "".join(cells)
    # the contents box goes after the chapter's opening (title, description, "You will learn"): before the first h2
    cut = body.find("<h2 ")
    body = body[:cut] + toc + body[cut:] if cut >= 0 and toc else toc + body
    title = chapter_summary(nb)[0] or stem
    return page(f"{title} — trainkit", banner + body, site_nav(stem, order), run_footer(stem, run))


def contents(order: list[tuple[str, str]], summaries: dict[str, tuple[str, str]]) -> str:
    "The course's chapters by section, each with its title and description, and the API reference."
    out, section = ['<nav class="toc" id="contents"><h2 id="chapters">Chapters</h2>'], None
    for sec, stem in order:
        if stem == "index":
            continue
        if sec != section:
            out.append(("</ul>" if section is not None else "") + (f"<h3>{html.escape(sec)}</h3>" if sec else "") + "<ul>")
            section = sec
        title, desc = summaries.get(stem, (stem, ""))
        out.append(f'<li><a href="{stem}.html"><b>{stem}</b></a> — {html.escape(title)}'
                   + (f'<br><span class="desc">{html.escape(desc)}</span>' if desc else "") + "</li>")
    out.append("</ul>" if section is not None else "")
    out.append('<h3>For engineers</h3><ul><li><a href="api.html"><b>API reference</b></a> — every exported function '
               "and class of every trainkit module: signature, documented parameters, docstring</li></ul></nav>")
    return "".join(out)


# ---------------------------------------------------------------- the API reference

def api_markdown(obj, name: str, level: int) -> str:
    "nbdev's show_doc for `obj` (the signature with its parameter comments, and the docstring), source link dropped."
    from nbdev.showdoc import show_doc
    try:
        text = show_doc(obj, name=name, title_level=level)._repr_markdown_()
    except NameError:  # an annotation naming what the module imports only inside a function: the same, unevaluated
        text = signature_markdown(obj, name, level)
    text = re.sub(r"^\[source\]\([^)]*\)\{[^}]*\}\s*$", "", text, flags=re.M)  # a GitHub link, a Quarto attribute
    return text.replace("---\n", "", 1)


def signature_markdown(obj, name: str, level: int) -> str:
    "show_doc's markdown, built without evaluating string annotations (fastcore's docments reads the comments)."
    from fastcore.docments import docments
    sig = inspect.signature(obj)
    notes = docments(obj, full=False)
    lines = []
    for p in sig.parameters.values():
        if p.name == "self":
            continue
        text = str(p.replace(annotation=inspect.Parameter.empty)) if p.annotation is inspect.Parameter.empty else (
            f"{'*' if p.kind == p.VAR_POSITIONAL else '**' if p.kind == p.VAR_KEYWORD else ''}{p.name}:"
            f"{str(p.annotation).strip(chr(39))}" + ("" if p.default is p.empty else f"={p.default!r}"))
        lines.append(f"    {text}," + (f" # {notes[p.name]}" if notes.get(p.name) else ""))
    ret = "" if sig.return_annotation is sig.empty else f"->{str(sig.return_annotation).strip(chr(39))}"
    short = getattr(obj, "__name__", name)
    doc = inspect.getdoc(obj) or ""
    first, _, rest = doc.partition("\n")
    return (f"{'#' * level} {name}\n\n```python\ndef {short}(\n" + "\n".join(lines) + f"\n){ret}:\n```\n\n"
            + (f"*{first}*\n\n{rest}" if first else ""))


def render_api(md: Markdown, chapters: dict[str, str], order: list[tuple[str, str]]) -> tuple[str, list[str]]:
    "The API page (every trainkit module's `__all__`, by show_doc) and the names it documents as 'module.name'."
    import trainkit
    modules = sorted(p.stem for p in Path(trainkit.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    toc, body, documented = [], [], []
    for mod in modules:
        try:
            module = importlib.import_module(f"trainkit.{mod}")
        except Exception as e:  # an extra that is not installed: say which, and go on
            body.append(f'<section class="api-module" id="{mod}"><h2>trainkit.{mod}</h2><div class="output error"><pre>'
                        f"cannot import trainkit.{mod}: {html.escape(repr(e))}</pre></div></section>")
            continue
        names = list(getattr(module, "__all__", []))
        if not names:
            continue
        where = chapters.get(mod)
        taught = f' — written in <a href="{where}.html">{where}</a>' if where else ""
        summary = (module.__doc__ or "").strip().split("\n")[0]
        toc.append(f'<li><a href="#{mod}">trainkit.{mod}</a> ({len(names)})</li>')
        parts = [f'<section class="api-module" id="{mod}"><h2>trainkit.{mod}{taught}</h2>']
        if summary and not summary.startswith("AUTOGENERATED"):
            parts.append(f"<p>{html.escape(summary)}</p>")
        for name in names:
            obj = getattr(module, name, None)
            documented.append(f"{mod}.{name}")
            parts.append(f'<div class="api-symbol" id="{mod}.{name}">')
            if inspect.isclass(obj) or inspect.isroutine(obj):
                parts.append(md(api_markdown(obj, name, 3)))
                if inspect.isclass(obj):
                    for meth, fn in vars(obj).items():
                        fn = fn.fget if isinstance(fn, property) else getattr(fn, "__func__", fn)
                        if meth.startswith("_") or not inspect.isfunction(fn):
                            continue
                        parts.append(f'<div id="{mod}.{name}.{meth}">{md(api_markdown(fn, f"{name}.{meth}", 4))}</div>')
            else:
                value = repr(obj)
                value = value if len(value) <= 300 else value[:300] + " …"
                parts.append(f'<h3 id="{mod}-{name.lower()}">{html.escape(name)}</h3>'
                             f'<p>a constant, <code>{type(obj).__name__}</code>:</p><pre>{html.escape(value)}</pre>')
            parts.append("</div>")
        parts.append("</section>")
        body.append("".join(parts))
    head = ("<h1>API reference</h1><p>Every name in the <code>__all__</code> of every <code>trainkit</code> module, "
            "rendered by nbdev's <code>show_doc</code> as the notebooks and the nbdev site show it: the signature, each "
            "parameter with the comment that documents it, and the docstring. Each module links to the chapter that "
            f"writes it.</p><nav class=\"page-toc\"><b>Modules</b><ul>{''.join(toc)}</ul></nav>")
    return page("API reference — trainkit", head + "".join(body), site_nav("api", order),
                "Generated by <code>tools/handouts.py</code> with nbdev's <code>show_doc</code>."), documented


# ---------------------------------------------------------------- executing the course

def execute(stems: list[str], dest: Path, fast: bool, jobs: int = 1) -> dict[str, dict]:
    "Run the instructor edition of the notebooks (tools/editions.py, then nbrun) into `dest`; return nbrun's results."
    import editions
    from nbrun import run_course
    with tempfile.TemporaryDirectory(prefix="handouts-") as tmp:  # the edition: no nbdev_export(), nothing beside nbs/
        editions.build(Path(tmp), names=stems)
        return run_course([Path(tmp) / "instructor" / f"{s}.ipynb" for s in stems], dest, fast=fast, jobs=jobs)


def build(out: Path, fast: bool = False, source: Path | None = None, only: list[str] | None = None,
          jobs: int = 1, log=print) -> dict:
    "Execute (or take from `source`) and render the course into `out`; return {'runs', 'documented', 'seconds'}."
    import nbformat
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_stems = [p.stem for p in notebooks(NBS)]
    stems = [s for s in all_stems if not only or s in only or s == "index"]
    order = course_order(all_stems)
    if source is None:
        source = out / "_executed"
        log(f"executing {len(stems)} notebooks in {'fast' if fast else 'learner'} mode ...")
        runs = execute(stems, source, fast, jobs)
    else:
        runs_file = Path(source) / "runs.json"
        runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    md = Markdown(set(all_stems))
    summaries = {}
    for stem in all_stems:
        src = Path(source) / f"{stem}.ipynb"
        summaries[stem] = chapter_summary(nbformat.read(src if src.is_file() else NBS / f"{stem}.ipynb", as_version=4))
    for stem in stems:
        src = Path(source) / f"{stem}.ipynb"
        if not src.is_file() and stem == "index":  # the front page has little to run: its source will do
            src = NBS / "index.ipynb"
        elif not src.is_file():
            log(f"{stem}: no executed notebook in {source}; skipped")
            continue
        nb = nbformat.read(src, as_version=4)
        text = render_notebook(nb, stem, order, runs.get(stem), md)
        if stem == "index":  # the course's front page, with the chapters listed right after its opening
            cut = text.find("<h2 ")
            cut = cut if cut >= 0 else text.find("</main>")
            text = text[:cut] + contents(order, summaries) + text[cut:]
        (out / f"{stem}.html").write_text(text, encoding="utf-8")
    api, documented = render_api(md, module_chapters(NBS), order)
    (out / "api.html").write_text(api, encoding="utf-8")
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    return {"runs": runs, "documented": documented, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------- the audit (also run by tests/test_handouts.py)

_LOADING_ATTRS = {"src", "srcset", "href", "poster", "data", "background", "action", "formaction", "xlink:href",
                  "manifest", "ping", "cite", "longdesc", "archive", "codebase", "profile", "usemap"}


def _remote(url: str) -> bool:
    "Whether a URL in a loading position would reach off the page (anything but a data: URI or an in-page anchor)."
    url = url.strip()
    return bool(url) and not url.startswith(("data:", "#"))


def css_loads(css: str) -> list[str]:
    "Every url(...) and @import in a stylesheet or a style attribute, read with a CSS parser (tinycss2)."
    import tinycss2
    found = []

    def walk(tokens):
        for tok in tokens:
            if tok.type == "url":
                found.append(f"url({tok.value})")
            elif tok.type == "function" and tok.lower_name in ("url", "src", "image-set"):
                found.append(f"{tok.lower_name}({tinycss2.serialize(tok.arguments)})")
            elif tok.type == "at-rule" and tok.lower_at_keyword in ("import", "font-face"):
                found.append(f"@{tok.lower_at_keyword}")
            for attr in ("content", "prelude", "arguments", "value"):
                sub = getattr(tok, attr, None)
                if isinstance(sub, list):
                    walk(sub)

    walk(tinycss2.parse_stylesheet(css, skip_whitespace=True, skip_comments=True))
    walk(tinycss2.parse_component_value_list(css))
    return [f for f in found if not re.search(r"url\(\s*['\"]?(data:|#)", f)]


def page_loads(text: str) -> list[str]:
    "Everything a page would fetch or run: script, frames, stylesheet links, remote src/href, CSS url() and @import."
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(text, "html.parser")
    found = [f"<{t.name}>" for t in soup.find_all(["script", "iframe", "frame", "object", "embed", "applet", "portal"])]
    for tag in soup.find_all(True):
        for attr, value in tag.attrs.items():
            value = " ".join(value) if isinstance(value, list) else str(value)
            if attr.lower().startswith("on"):
                found.append(f"<{tag.name} {attr}>")
            elif attr.lower() in _LOADING_ATTRS and _remote(value) and not (tag.name == "a" and attr == "href"):
                found.append(f"<{tag.name} {attr}={value[:80]}>")
            elif attr.lower() == "style":
                found += css_loads(value)
        if tag.name == "meta" and str(tag.get("http-equiv", "")).lower() == "refresh":
            found.append("<meta refresh>")
    for style in soup.find_all("style"):
        found += css_loads(style.get_text())
    return found


def figures(nb) -> list[str]:
    "The base64 payload of every image output of an executed notebook (hidden cells left out, as the page does)."
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "hide" in directives(cell.source):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            view = data.get("application/vnd.jupyter.widget-view+json")
            if view or "text/html" in data:
                continue  # widgets and HTML outputs are drawn from their own form
            for mime in ("image/png", "image/jpeg", "image/gif", "image/webp"):
                if mime in data:
                    found.append(_text(data[mime]).strip())
                    break
    return found


SHAMEFUL = re.compile(r"(?<!Data)(Deprecation|Future|Runtime|User|Resource|Syntax|PendingDeprecation)Warning|"
                      r"Traceback \(most recent call last\)")


def audit(out: Path, source: Path, stems: list[str], all_stems: list[str], documented: list[str] | None = None) -> list[str]:
    "Problems with the rendered pages: missing page or figure, a load off the page, an error, maths left unrendered."
    import nbformat
    from bs4 import BeautifulSoup
    problems = []
    for stem in stems + ["api"]:
        path = Path(out) / f"{stem}.html"
        if not path.is_file():
            problems.append(f"{stem}: no page {path}")
            continue
        text = path.read_text(encoding="utf-8")
        soup = BeautifulSoup(text, "html.parser")
        for load in page_loads(text):
            problems.append(f"{stem}: loads {load}")
        for err in soup.select(".output.error, .banner"):
            problems.append(f"{stem}: error output: {err.get_text()[:300]}")
        for warn in soup.select(".output.stderr"):
            if SHAMEFUL.search(warn.get_text()):
                problems.append(f"{stem}: a warning on stderr: {warn.get_text()[:300]}")
        if soup.select(".math-fallback"):
            problems.append(f"{stem}: maths latex2mathml could not render: "
                            + "; ".join(t.get_text() for t in soup.select(".math-fallback")[:5]))
        prose = " ".join(t.get_text(" ") for t in soup.select(".cell.markdown"))
        if re.search(r"\$\$|(?<![\w`])\$[^$\s][^$\n]*?\\[a-zA-Z]+[^$\n]*\$", prose):
            problems.append(f"{stem}: maths left as LaTeX source")
        if stem == "api":
            ids = {t.get("id") for t in soup.find_all(True) if t.get("id")}
            problems += [f"api: {name} is not documented" for name in documented or [] if name not in ids]
            continue
        srcs = {img.get("src", "").split("base64,", 1)[-1] for img in soup.find_all("img")}
        src = Path(source) / f"{stem}.ipynb"
        nb = nbformat.read(src if src.is_file() else NBS / f"{stem}.ipynb", as_version=4)
        wanted = figures(nb)
        missing = [i for i, fig in enumerate(wanted) if fig not in srcs]
        if missing:
            problems.append(f"{stem}: {len(missing)} of its {len(wanted)} figures are not in the page")
        if stem == "index":
            links = {a.get("href") for a in soup.select("nav.toc a")}
            problems += [f"index: no link to {s}.html" for s in all_stems if s != "index" and f"{s}.html" not in links]
            if "api.html" not in links:
                problems.append("index: no link to api.html")
    return problems


REQUIRES = {"latex2mathml": "latex2mathml>=3.77", "mistune": "mistune>=3", "bs4": "beautifulsoup4>=4.12",
            "tinycss2": "tinycss2>=1.2", "pygments": "pygments>=2.15", "yaml": "pyyaml>=6", "nbdev": "nbdev>=3.0,<4"}


def missing_requirements() -> list[str]:
    "The pip requirements of the handouts that are not installed (all of them are in the `test` extra)."
    import importlib.util
    return [req for mod, req in REQUIRES.items() if importlib.util.find_spec(mod) is None]


def main(argv: list[str] | None = None) -> int:
    if missing := missing_requirements():
        print("the handouts need: " + " ".join(missing) + "\ninstall them with: "
              + sys.executable + " -m pip install " + " ".join(f'"{m}"' for m in missing), file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the pages (e.g. _handouts)")
    ap.add_argument("--fast", action="store_true", help="execute in fast mode (TRAINKIT_FAST=1); learner mode otherwise")
    ap.add_argument("--from", dest="source", type=Path, help="a folder of executed notebooks (NB.ipynb, runs.json)")
    ap.add_argument("--only", nargs="+", metavar="NB", help="render only these notebooks (stems, e.g. 00_core)")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks executed at the same time")
    a = ap.parse_args(argv)
    only = [Path(s).stem for s in a.only] if a.only else None
    result = build(a.out, a.fast, a.source, only, a.jobs)
    all_stems = [p.stem for p in notebooks(NBS)]
    stems = [s for s in all_stems if not only or s in only or s == "index"]
    source = a.source or a.out / "_executed"
    problems = audit(a.out, source, stems, all_stems, result["documented"])
    sizes = {p.stem: p.stat().st_size for p in sorted(a.out.glob("*.html"))}
    for stem, size in sizes.items():
        run = result["runs"].get(stem, {})
        seconds = f"{run['seconds']:6.1f} s" if "seconds" in run else "        "
        print(f"  {stem + '.html':<24} {size / 1024:8.0f} KiB  {seconds}")
    print(f"{len(sizes)} pages, {sum(sizes.values()) / 2**20:.1f} MiB, in {a.out}/ ({result['seconds']:.0f} s)")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
