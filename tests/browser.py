"""Shared helpers and fixtures for real-browser tests: JupyterLab on 127.0.0.1, Debian's Chromium via Playwright.

Use from a test module (the marker and the skip are the module's job):

    from browser import browser_page, jupyter_server, skip_reason  # noqa: F401  (fixtures by import)
    from browser import Deadline, open_notebook, run_all_and_wait_for_widget, save_screenshot, write_notebook

What it sets up, all bounded in time and local only:
- `jupyter_server` (session): `jupyter lab` on 127.0.0.1, a free port and a random token, its root, config,
  runtime, settings and workspaces in a temp folder, TRAINKIT_DATA / TRAINKIT_ARTIFACTS in temp folders, news,
  update checks and the PyPI extension manager off. Stopped at teardown with its kernels, also on failure.
- `browser_page` (function): headless /usr/bin/chromium (never Playwright's own download) with a fresh profile,
  no background networking, 1280x900; its console errors are collected in `page.tk_console`.
- `write_notebook`, `open_notebook` (waits for an idle kernel), `run_all_and_wait_for_widget` (runs every cell
  through JupyterLab's own command and waits for the ipywidget, failing fast on a Python error), `save_screenshot`
  (to $TRAINKIT_SCREENSHOTS, e.g. docs/screenshots; a temp folder by default) and `Deadline` (one time budget that every wait draws from).

Playwright is imported lazily, so this module imports (and `skip_reason()` works) where it is not installed.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Screenshots go to the artifacts folder; TRAINKIT_SCREENSHOTS=docs/screenshots refreshes the committed ones.
SCREENSHOTS = Path(os.environ.get("TRAINKIT_SCREENSHOTS") or Path(tempfile.gettempdir()) / "trainkit-screenshots")
if not SCREENSHOTS.is_absolute():
    SCREENSHOTS = REPO / SCREENSHOTS
JUPYTER = Path(sys.executable).parent / "jupyter"
# Chromium flags for this machine: root (no sandbox), no network but loopback, no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1280, "height": 900}
SERVER_START_S = 60  # jupyter lab must answer /api/status within this
SERVER_STOP_S = 15  # then SIGKILL
ACTION_TIMEOUT_MS = 20_000  # default for any single Playwright action or wait


def skip_reason() -> str | None:
    "Why browser tests cannot run here, or None. Install what they need with `bash tools/install-browser.sh`."
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found: run `bash tools/install-browser.sh` (Debian's chromium package)"
    missing = [m for m in ("playwright.sync_api", "jupyterlab", "ipywidgets", "nbformat") if not _importable(m)]
    if missing:
        return f"{', '.join(missing)} not importable: run `bash tools/install-browser.sh` (and `make setup`)"
    if not JUPYTER.exists():
        return f"{JUPYTER} not found: jupyterlab is not installed in this venv"
    return None


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


class Deadline:
    "One time budget for a whole test: each wait gets `ms(cap)`, the smaller of its cap and what is left."

    def __init__(self, seconds: float, what: str = "test"):
        self.seconds, self.what, self.end = seconds, what, time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def ms(self, cap_s: float) -> float:
        "A Playwright timeout in ms; fails the test at once when the budget is spent."
        left = self.left()
        if left <= 0:
            pytest.fail(f"{self.what} ran past its {self.seconds:.0f} s budget")
        return max(1.0, min(cap_s, left) * 1000)


# ----------------------------------------------------------------------------------------------- the server

class JupyterServer(NamedTuple):
    base_url: str  # http://127.0.0.1:PORT (no trailing slash)
    token: str
    root_dir: Path  # notebooks written here are served at /lab/tree/<name>

    @property
    def log_path(self) -> Path:
        return self.root_dir.parent / "jupyter-server.log"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def url(self, path: str) -> str:
        "The address of `path` (e.g. 'lab/tree/x.ipynb') with the token."
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{sep}token={self.token}"


def _lab_settings(settings_dir: Path) -> None:
    "User settings that keep JupyterLab from asking about news and update checks (no toast, no fetch)."
    d = settings_dir / "@jupyterlab" / "apputils-extension"
    d.mkdir(parents=True, exist_ok=True)
    (d / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def _descendants(pid: int) -> list:
    "The server's child processes (its kernels), so that none outlives the test."
    try:
        import psutil
        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def _status_ok(base_url: str, token: str) -> bool:
    req = urllib.request.Request(f"{base_url}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200 and "started" in json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _stop(proc: subprocess.Popen, log) -> None:
    kids = _descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # jupyter_server shuts its kernels down on SIGTERM
        try:
            proc.wait(SERVER_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    for k in kids:  # kernels run in sessions of their own: make sure none is left
        try:
            if k.is_running():
                k.kill()
        except Exception:
            pass
    log.close()


def start_jupyter_lab(tmp: Path, extra_env: dict | None = None, tries: int = 3):
    "Start `jupyter lab` under `tmp`; return (JupyterServer, Popen, log file). Raises if it does not answer in time."
    root = tmp / "root"
    dirs = {name: tmp / name for name in ("config", "data", "runtime", "settings", "workspaces", "tk_data", "tk_artifacts")}
    for d in [root, *dirs.values()]:
        d.mkdir(parents=True, exist_ok=True)
    _lab_settings(dirs["settings"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "TRAINKIT_"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]), JUPYTER_PLATFORM_DIRS="1",
        TRAINKIT_DATA=str(dirs["tk_data"]), TRAINKIT_ARTIFACTS=str(dirs["tk_artifacts"]),
        PYDEVD_DISABLE_FILE_VALIDATION="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
        **(extra_env or {}),
    )
    last = ""
    for _ in range(tries):  # a port taken between free_port() and the bind: try another
        token, port = secrets.token_hex(24), free_port()
        server = JupyterServer(f"http://127.0.0.1:{port}", token, root)
        log = open(server.log_path, "w")
        cmd = [
            str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
            "--ServerApp.shutdown_no_activity_timeout=600",  # a server leaked by a killed run ends by itself
            "--KernelManager.shutdown_wait_time=3",
        ] + (["--allow-root"] if os.geteuid() == 0 else [])
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + SERVER_START_S
        while time.monotonic() < end and proc.poll() is None:
            if _status_ok(server.base_url, token):
                return server, proc, log
            time.sleep(0.25)
        why = f"exited with code {proc.returncode}" if proc.poll() is not None else \
            f"did not answer /api/status within {SERVER_START_S} s"
        _stop(proc, log)
        last = f"jupyter lab {why}; the end of its log:\n{server.log_tail()}"
        if "already in use" not in last:
            break
    raise RuntimeError(last)


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory):
    "A JupyterLab server for the session: yields JupyterServer(base_url, token, root_dir); stopped at teardown."
    server, proc, log = start_jupyter_lab(tmp_path_factory.mktemp("jupyter"))
    try:
        yield server
    finally:
        _stop(proc, log)


# ----------------------------------------------------------------------------------------------- the browser

@pytest.fixture
def browser_page(tmp_path):
    "A fresh headless Chromium page (Debian's, through Playwright); console errors go to `page.tk_console`."
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT, timeout=30_000,
        )
        try:
            ctx.set_default_timeout(ACTION_TIMEOUT_MS)
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.tk_console = []
            page.on("console", lambda m: page.tk_console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: page.tk_console.append(f"pageerror: {e}"))
            yield page
        finally:
            ctx.close()


def write_notebook(root_dir: Path, name: str, cells: list[str]) -> Path:
    "Write a notebook of code `cells` (Python 3 kernel) to root_dir/name."
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = Path(root_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


_NOTEBOOK_READY = """name => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  if (!w || !w.context || w.context.path !== name || !w.context.isReady || !w.sessionContext) return false;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""


def open_notebook(page, server: JupyterServer, name: str, deadline: Deadline) -> None:
    "Open root_dir/name in JupyterLab and wait until its kernel is connected and idle."
    page.goto(server.url(f"lab/tree/{name}"), wait_until="domcontentloaded", timeout=deadline.ms(30))
    try:
        page.wait_for_function(_NOTEBOOK_READY, arg=name, timeout=deadline.ms(45), polling=250)
    except Exception as e:
        raise AssertionError(f"{name}: the notebook or its kernel was not ready in time ({e}).\n"
                             f"Browser console: {page.tk_console[-10:]}\nServer log:\n{server.log_tail()}") from None
    try:  # a wider notebook makes a clearer screenshot; not essential
        page.evaluate("() => window.jupyterapp.shell.collapseLeft && window.jupyterapp.shell.collapseLeft()")
    except Exception:
        pass


# Returns 'ok' once `selector` is in an output, or a message once a cell failed; false while neither.
_WIDGET_OR_ERROR = """([selector]) => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.model.cells;
  for (let i = 0; i < cells.length; i++) {
    const outs = cells.get(i).outputs;
    if (!outs) continue;
    for (const o of outs.toJSON()) {
      if (o.output_type === 'error') return `cell ${i}: ${o.ename}: ${o.evalue}`;
    }
  }
  for (const o of w.node.querySelectorAll('.jp-OutputArea-output')) {
    if (/Error displaying widget|Error rendering widget/.test(o.textContent)) return 'widget: ' + o.textContent.trim();
    if (o.querySelector(selector)) return 'ok';
  }
  return false;
}"""


def run_all_and_wait_for_widget(page, deadline: Deadline, selector: str = ".jupyter-widgets .widget-button",
                                cap_s: float = 60):
    "Run every cell with JupyterLab's 'Run All Cells' command; wait for `selector` in an output and return it."
    # The command itself, not a click or key on the page: no focus or keymap to get wrong. Not awaited here:
    # it settles only when every cell has run, and the wait below is the bounded one.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    try:
        handle = page.wait_for_function(_WIDGET_OR_ERROR, arg=[selector], timeout=deadline.ms(cap_s), polling=250)
    except Exception as e:
        raise AssertionError(f"no {selector!r} in any output in time ({e}). Console: {page.tk_console[-10:]}") from None
    result = handle.json_value()
    assert result == "ok", f"the notebook failed: {result}\nBrowser console: {page.tk_console[-10:]}"
    return page.locator(f".jp-OutputArea-output {selector}").first


def save_screenshot(page, name: str, locator=None) -> Path:
    "Save the page (scrolled to `locator` if given) to SCREENSHOTS/<name>.png and return the path."
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if locator is not None:
        locator.scroll_into_view_if_needed(timeout=5_000)
    path = SCREENSHOTS / f"{name}.png"
    tmp = path.with_name(f".{name}.png.tmp")
    page.screenshot(path=str(tmp), timeout=15_000, animations="disabled", type="png")
    os.replace(tmp, path)
    return path


@contextmanager
def screenshot_on_failure(page, where: Path):
    "On any failure inside, save a screenshot of the page to `where` (not docs/) and name it in the error."
    try:
        yield
    except BaseException as e:
        try:
            page.screenshot(path=str(where), timeout=5_000)
            note = f"\n(screenshot of the page at failure: {where})"
        except Exception:
            note = ""
        if note and isinstance(e, AssertionError):
            raise AssertionError(f"{e}{note}") from None
        if note and hasattr(e, "add_note"):  # Python 3.11+
            e.add_note(note.strip())
        raise


__all__ = ["CHROMIUM", "SCREENSHOTS", "require_browser", "Deadline", "JupyterServer", "browser_page", "jupyter_server",
           "open_notebook", "run_all_and_wait_for_widget", "save_screenshot", "screenshot_on_failure",
           "skip_reason", "start_jupyter_lab", "write_notebook"]


# ----------------------------------------------------------------------------------------------- widget helpers
# Used by tests/test_browser_widgets.py: read what the kernel holds, what a widget shows, and move sliders.

_KERNEL_EVAL = """async ([expr, ms]) => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!k) return {ok: false, text: 'no kernel'};
  const done = k.requestExecute({code: '', silent: true, store_history: false, user_expressions: {v: expr}}).done;
  const late = new Promise(resolve => setTimeout(() => resolve(null), ms));
  const reply = await Promise.race([done, late]);
  if (!reply) return {ok: false, text: `no reply in ${ms} ms (is the kernel busy?)`};
  const v = reply.content.user_expressions.v;
  return v.status === 'ok' ? {ok: true, text: v.data['text/plain']} : {ok: false, text: `${v.ename}: ${v.evalue}`};
}"""


def kernel_eval(page, expr: str, deadline: Deadline, cap_s: float = 10):
    """`expr` evaluated in the open notebook's kernel, as a Python value (`ast.literal_eval` of its repr, else the repr).

    Runs as a silent request with a user expression: no output, no history, no execution count. It goes out on the
    shell channel behind every comm message the page has already sent, so it also tells when the kernel has seen
    a widget change (ipywidgets may hold back a burst of slider updates until the kernel is idle)."""
    import ast
    res = page.evaluate(_KERNEL_EVAL, [expr, deadline.ms(cap_s)])
    if not res["ok"]:
        raise AssertionError(f"kernel: {expr!r} failed: {res['text']}")
    try:
        return ast.literal_eval(res["text"])
    except (ValueError, SyntaxError):
        return res["text"]


def wait_for_kernel(page, expr: str, predicate, deadline: Deadline, cap_s: float = 10, what: str = ""):
    "Poll `expr` in the kernel until `predicate(value)` holds; return the value. Fails with the last value seen."
    end = time.monotonic() + min(cap_s, max(deadline.left(), 0))
    while True:
        value = kernel_eval(page, expr, deadline)
        if predicate(value):
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"kernel: {expr} is {value!r} after {cap_s:.0f} s{f' (waiting for {what})' if what else ''}")
        time.sleep(0.1)


def slider_by_label(container, label: str):
    "The ipywidgets slider in `container` whose description is exactly `label`."
    import re
    page = container.page
    return container.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(label)}$")))


def press_on_slider(slider, keys: list[str] | str, deadline: Deadline) -> str:
    "Focus the slider's handle and press `keys` (e.g. ['ArrowRight'] * 2, 'End') as a user would; return the readout."
    handle = slider.locator(".noUi-handle")
    handle.focus(timeout=deadline.ms(10))
    for key in [keys] if isinstance(keys, str) else keys:
        handle.press(key, timeout=deadline.ms(5))
    return slider.locator(".widget-readout").inner_text(timeout=deadline.ms(5))


def drag_slider(slider, fraction: float, deadline: Deadline) -> str:
    "Drag the slider's handle with the mouse to `fraction` (0..1) of its track; return the readout."
    page = slider.page
    handle, track = slider.locator(".noUi-handle"), slider.locator(".noUi-base")
    handle.scroll_into_view_if_needed(timeout=deadline.ms(5))
    h, t = handle.bounding_box(timeout=deadline.ms(5)), track.bounding_box(timeout=deadline.ms(5))
    y = h["y"] + h["height"] / 2
    page.mouse.move(h["x"] + h["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(t["x"] + fraction * t["width"], y, steps=12)
    page.mouse.up()
    return slider.locator(".widget-readout").inner_text(timeout=deadline.ms(5))


_IMAGE_BYTES = """async el => {
  if (!el.src) return '';
  const buf = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
  let s = '';
  for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode.apply(null, buf.subarray(i, i + 0x8000));
  return btoa(s);
}"""


def image_bytes(img, deadline: Deadline) -> bytes:
    "The bytes an ipywidgets Image (an <img> with a blob: or data: URL) shows; b'' when it has none."
    import base64
    for attempt in range(3):  # a blob URL revoked by an update in between: read the new one
        try:
            return base64.b64decode(img.evaluate(_IMAGE_BYTES, timeout=deadline.ms(10)))
        except Exception:
            if attempt == 2:
                raise
            time.sleep(0.2)


def png_size(data: bytes) -> tuple[int, int] | None:
    "(width, height) of a PNG, or None if `data` is not one."
    import struct
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


_HTML_TABLE = """el => {
  const t = el.querySelector('table');
  if (!t) return null;
  return Array.from(t.querySelectorAll('tr')).map(tr => Array.from(tr.children).map(c => c.textContent.trim()));
}"""


def html_table(locator, deadline: Deadline) -> list[list[str]] | None:
    "The rows (lists of cell texts, header rows included) of the first <table> inside `locator`; None if none."
    return locator.evaluate(_HTML_TABLE, timeout=deadline.ms(5))


__all__ += ["drag_slider", "html_table", "image_bytes", "kernel_eval", "png_size", "press_on_slider",
            "slider_by_label", "wait_for_kernel"]


def require_browser():
    "Skip the calling test module where Chromium or Playwright is missing; fail instead if TRAINKIT_BROWSER_REQUIRED=1 (CI)."
    why = skip_reason()
    if why:
        if os.environ.get("TRAINKIT_BROWSER_REQUIRED") == "1":
            raise RuntimeError(f"browser tests are required here (TRAINKIT_BROWSER_REQUIRED=1) but cannot run: {why}")
        pytest.skip(why, allow_module_level=True)
