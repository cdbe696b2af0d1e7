"""Real-browser tests: the course's ipywidgets in JupyterLab, driven by Debian's headless Chromium via Playwright.

Marker `browser`. Needs /usr/bin/chromium and the playwright package: `bash tools/install-browser.sh`.
Without them the module is skipped, unless TRAINKIT_BROWSER_REQUIRED=1 (CI), where that is an error.
Each test draws every wait from one time budget (`Deadline`); the server fixture has its own start limit.
"""
from __future__ import annotations

import re

import pytest

from browser import (  # noqa: F401  (jupyter_server, browser_page: fixtures, used by name)
    Deadline, browser_page, jupyter_server, open_notebook, run_all_and_wait_for_widget, save_screenshot,
    screenshot_on_failure, require_browser, write_notebook,
)

require_browser()

pytestmark = pytest.mark.browser

LABELER_SETUP = """\
from pathlib import Path
from trainkit.data import build_database, collect
from trainkit.label import Labeler

db = build_database(Path({db!r}), overwrite=True)  # a fresh course database
raw = collect(db)
commented = raw[raw["Comments"].notna()][["Species", "Individual ID", "Comments"]]
lab = Labeler(commented, ["nest", "sample", "sexing", "other"], db, task="comment_type", labeler="browser",
              autosave=0)
"""
LABELER_WIDGET = "ui = lab.widget()\nui"


def test_labeler_widget_in_jupyterlab(jupyter_server, browser_page, tmp_path):
    "Label three records with real clicks, undo one, save: the page and the database both show two labels."
    from playwright.sync_api import expect

    from trainkit.data import collect
    from trainkit.label import read_labels

    server, page = jupyter_server, browser_page
    deadline = Deadline(100, "test_labeler_widget_in_jupyterlab")
    rel = "labeler-data/penguins.sqlite"  # the kernel runs in root_dir, beside the notebook
    db = server.root_dir / rel
    write_notebook(server.root_dir, "labeler.ipynb", [LABELER_SETUP.format(db=rel), LABELER_WIDGET])

    with screenshot_on_failure(page, tmp_path / "labeler-failure.png"):
        open_notebook(page, server, "labeler.ipynb", deadline)
        run_all_and_wait_for_widget(page, deadline)

        # What the widget should show, read from the database the kernel just built.
        raw = collect(db)
        commented = raw[raw["Comments"].notna()]
        ids, rids, total = commented["Individual ID"].tolist(), [str(i) for i in commented.index], len(commented)

        ui = page.locator(".jp-OutputArea-output .widget-vbox").first
        view, status = ui.locator(".widget-html-content").nth(0), ui.locator(".widget-html-content").nth(1)
        shown_id = view.locator("tr", has=page.locator("th", has_text=re.compile(r"^Individual ID$"))).locator("td")
        bar = ui.locator(".widget-hprogress .progress-bar")

        def expect_state(labeled: int, unsaved: int | None, pos: int):
            "The status line, the progress bar and the record on show, as the kernel's Labeler has them."
            text = re.compile(rf"^{labeled}/{total} labeled; {unsaved if unsaved is not None else '[0-9]+'} unsaved$")
            expect(status).to_have_text(text, timeout=deadline.ms(15))
            expect(shown_id).to_have_text(ids[pos], timeout=deadline.ms(5))
            # the kernel sends the bar's value before the status text, so the bar is up to date by now
            width = bar.evaluate("el => parseFloat(el.style.width)", timeout=deadline.ms(5))
            assert width == pytest.approx(100 * labeled / total, abs=0.01), f"progress bar at {width}%"

        def click(name: str):
            ui.get_by_role("button", name=name, exact=True).click(timeout=deadline.ms(10))

        expect_state(0, 0, 0)
        click("nest")
        expect_state(1, 1, 1)
        click("sample")
        expect_state(2, 2, 2)
        click("sexing")
        expect_state(3, 3, 3)
        click("Undo")  # takes back "sexing" (never saved, so nothing to delete): the third record is on show again
        expect_state(2, 2, 2)
        click("Save")
        expect_state(2, 0, 2)

        shot = save_screenshot(page, "labeler", ui)
        assert shot.stat().st_size > 10_000

    saved = read_labels(db, "comment_type", "browser")
    assert saved.label.tolist() == ["nest", "sample"]
    assert saved.record_id.tolist() == rids[:2]
    assert deadline.left() > 0
