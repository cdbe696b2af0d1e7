"""Real-browser tests of the tuning panel (trainkit.panel) and the threshold widget (trainkit.plots) in JupyterLab.

Marker `browser`; the same setup and skip rules as tests/test_browser.py (helpers in tests/browser.py): Debian's
headless Chromium through Playwright, a local JupyterLab, every cell run with JupyterLab's own command. Sliders are
moved with the keyboard on their handles and with the mouse, buttons clicked, and what the page then shows is
checked against what the kernel holds and against trainkit's own functions run here on the same numbers.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from browser import (  # noqa: F401  (jupyter_server, browser_page: fixtures, used by name)
    VIEWPORT, Deadline, browser_page, drag_slider, html_table, image_bytes, jupyter_server, kernel_eval, open_notebook,
    png_size, press_on_slider, run_all_and_wait_for_widget, save_screenshot, screenshot_on_failure, require_browser,
    slider_by_label, wait_for_kernel, write_notebook,
)

require_browser()

pytestmark = pytest.mark.browser


# ----------------------------------------------------------------------------------------------- tuning panel

PANEL_SETUP = """\
from trainkit.datasets import load_datasets
from trainkit.panel import TuningPanel
panel = TuningPanel(load_datasets("digits"))
panel.set(epochs=3)
"""
PANEL_WIDGET = "ui = panel.widget()\nui"
FINISHED = r"^{n} run\(s\); last: accuracy (\d\.\d{{3}})$"


def _runs(table, deadline) -> list[dict]:
    "The history table (pandas' to_html of panel.history()) as one dict per run, cell texts by column name."
    rows = html_table(table, deadline)
    assert rows, f"no history table; the widget shows {table.inner_text()!r}"
    header = rows[0]  # ['', 'lr', 'batch_size', ...]; the next header row holds the index name, 'run'
    body = [r for r in rows[1:] if r and r[0] != "run"]
    return [dict(zip(["run"] + header[1:], r)) for r in body]


def test_tuning_panel_in_jupyterlab(jupyter_server, browser_page, tmp_path):
    "Move sliders, train twice, compare the two runs, then stop a long run: the page shows what the kernel did."
    from playwright.sync_api import expect

    server, page = jupyter_server, browser_page
    deadline = Deadline(90, "test_tuning_panel_in_jupyterlab")
    write_notebook(server.root_dir, "tuning.ipynb", [PANEL_SETUP, PANEL_WIDGET])

    with screenshot_on_failure(page, tmp_path / "tuning-failure.png"):
        open_notebook(page, server, "tuning.ipynb", deadline)
        run_all_and_wait_for_widget(page, deadline, ".widget-button[title='Train']")

        ui = page.locator(".jp-OutputArea-output .widget-vbox").first  # the panel's outer VBox
        html = ui.locator(".widget-html-content")
        status, table = html.nth(0), html.nth(2)  # status, "<b>Runs</b>", history table
        curves, compared = ui.locator("img.widget-image").nth(0), ui.locator("img.widget-image").nth(1)
        picks = ui.locator(".widget-dropdown select")  # batch size, run, vs run

        def click(name: str):
            # by title: Train and Stop carry a Font Awesome icon, whose glyph is part of their accessible name
            ui.locator(f"button.widget-button[title={name!r}]").click(timeout=deadline.ms(10))

        stale = []  # status lines that still said "training" after a run had finished

        def finished(n: int) -> list[dict]:
            "Wait until the history shows n runs and the kernel's panel is idle; check the status; return the runs."
            expect(table.locator("tbody tr")).to_have_count(n, timeout=deadline.ms(40))
            wait_for_kernel(page, "panel.running", lambda v: v is False, deadline, what="the run to end")
            runs = _runs(table, deadline)
            try:  # the status is set in the same refresh as the table, right after it
                expect(status).to_have_text(re.compile(FINISHED.format(n=n)), timeout=deadline.ms(5))
                shown = float(re.match(FINISHED.format(n=n), status.inner_text()).group(1))
                assert shown == pytest.approx(float(runs[-1]["accuracy"]), abs=6e-4), (shown, runs[-1])
            except AssertionError:
                stale.append(f"after run {n}: {status.inner_text()!r}")
            return runs

        expect(status).to_have_text("Set the sliders and press Train.", timeout=deadline.ms(10))
        expect(table).to_have_text("no runs yet", timeout=deadline.ms(5))
        blank = image_bytes(curves, deadline)
        assert png_size(blank), "the curves image is not a PNG before training"

        # 1. width 64 -> 72 with two presses on the slider's handle; the kernel's panel follows.
        width = slider_by_label(ui, "width")
        assert width.locator(".widget-readout").inner_text() == "64"
        assert press_on_slider(width, ["ArrowRight"] * 2, deadline) == "72"
        wait_for_kernel(page, "panel.values['width']", lambda v: v == 72, deadline, what="width 72 from the slider")

        click("Train")
        runs = finished(1)
        assert (runs[0]["run"], runs[0]["width"], runs[0]["epochs"], runs[0]["epochs run"], runs[0]["stopped"]) == \
            ("1", "72", "3", "3", "False"), runs[0]
        acc1 = kernel_eval(page, "panel.runs[0]['summary']['accuracy']", deadline)
        assert float(runs[0]["accuracy"]) == pytest.approx(acc1, abs=6e-5)
        trained = image_bytes(curves, deadline)
        assert png_size(trained) == png_size(blank) and trained != blank, "the curves did not change after training"

        # 2. learning rate up three steps of 0.1 on its log10 scale, train again.
        lr = slider_by_label(ui, "learning rate")
        lr_before = lr.locator(".widget-readout").inner_text()
        lr_shown = press_on_slider(lr, ["ArrowRight"] * 3, deadline)
        assert lr_shown != lr_before, f"the learning-rate readout stayed at {lr_before}"
        exponent = float(lr.locator(".noUi-handle").get_attribute("aria-valuenow"))
        lr_new = wait_for_kernel(page, "panel.values['lr']", lambda v: v == pytest.approx(10 ** exponent, rel=1e-6),
                                 deadline, what=f"lr 10**{exponent} from the slider")
        assert float(lr_shown) == pytest.approx(lr_new, rel=0.02), (lr_shown, lr_new)

        click("Train")
        runs = finished(2)
        assert [r["run"] for r in runs] == ["1", "2"], runs
        assert float(runs[1]["lr"]) == pytest.approx(round(lr_new, 4), abs=1e-9), (runs[1], lr_new)
        assert float(runs[0]["lr"]) != float(runs[1]["lr"]) and runs[1]["width"] == "72", runs

        # 3. compare run 1 with run 2: pick them in the two dropdowns, press Compare.
        expect(picks.nth(1).locator("option")).to_have_count(2, timeout=deadline.ms(5))
        picks.nth(1).select_option(label="1", timeout=deadline.ms(5))
        picks.nth(2).select_option(label="2", timeout=deadline.ms(5))
        wait_for_kernel(page, "[p.value for p in ui.children[5].children[:2]]", lambda v: v == [1, 2], deadline,
                        what="runs 1 and 2 picked")
        assert not png_size(image_bytes(compared, deadline)), "a comparison is shown before Compare was pressed"
        click("Compare")
        page.wait_for_function("el => el.naturalWidth > 0", arg=compared.element_handle(timeout=deadline.ms(5)),
                               timeout=deadline.ms(15), polling=100)
        size = png_size(image_bytes(compared, deadline))
        assert size and size[0] > 300 and size[1] > 150, f"the comparison image is {size}"
        # the whole panel (sliders to comparison, about 1500 px with its two full-width plots) in one picture
        page.set_viewport_size({"width": 1280, "height": 1700})
        try:
            ui.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)  # let JupyterLab lay the taller window out
            shot = save_screenshot(page, "tuning_panel")
        finally:
            page.set_viewport_size(VIEWPORT)
        assert shot.stat().st_size > 10_000

        # 4. a long run (the epochs slider to its end with the End key), stopped with Stop after its first epoch.
        epochs = slider_by_label(ui, "epochs")
        most = int(float(epochs.locator(".noUi-handle").get_attribute("aria-valuemax")))
        assert most >= 50, f"the epochs slider ends at {most}"
        assert press_on_slider(epochs, "End", deadline) == str(most)
        wait_for_kernel(page, "panel.values['epochs']", lambda v: v == most, deadline, what=f"epochs {most} from the slider")
        click("Train")
        expect(status).to_have_text(re.compile(rf"^training: epoch \d+/{most}$"), timeout=deadline.ms(20))
        click("Stop")
        run3 = finished(3)[2]
        assert (run3["epochs"], run3["stopped"]) == (str(most), "True"), run3
        assert 1 <= int(run3["epochs run"]) < most, run3
        assert kernel_eval(page, "(panel.running, len(panel.runs), panel.runs[-1]['summary']['stopped'])",
                           deadline) == (False, 3, True)
        assert not stale, (
            "the status line did not report the finished runs: " + "; ".join(stale) + ". A run's last refresh "
            "happens in its own training thread, which is still alive then: the status must not take that for "
            "'training' (it should read 'k run(s); last: accuracy ...').")
    assert deadline.left() > 0


# ----------------------------------------------------------------------------------------------- threshold widget

THRESHOLD_SETUP = """\
import json
import torch
from trainkit.datasets import load_datasets
from trainkit.evaluate import evaluate
from trainkit.plots import threshold_widget
from trainkit.learner import Learner
from trainkit.models import MLP

cancer = load_datasets("breast_cancer")
torch.manual_seed(0)
learn = Learner(MLP(30, 2, (16,)), cancer).fit(5, lr=3e-3)  # a few epochs: probabilities spread over [0, 1]
report = evaluate(learn, cancer, split="valid", name="MLP")
with open("threshold-report.json", "w") as f:  # the same numbers, for the test to recompute what it should see
    json.dump(report.to_json(), f)
"""
THRESHOLD_WIDGET = "tw = threshold_widget(report)\ntw"
SHOWN = re.compile(r"precision (\d\.\d{3}) · recall (\d\.\d{3}) · F1 (\d\.\d{3})")


def _expected_text(r: dict) -> tuple[list[list[int]], str]:
    "What the widget should show for an at_threshold result: the confusion counts and the precision line."
    return r["confusion"], f"precision {r['precision']:.3f} · recall {r['recall']:.3f} · F1 {r['f1']:.3f}"


def test_threshold_widget_in_jupyterlab(jupyter_server, browser_page, tmp_path):
    "Move the threshold with keys and the mouse: the confusion matrix, precision and recall follow at_threshold."
    from playwright.sync_api import expect

    from trainkit.evaluate import at_threshold

    server, page = jupyter_server, browser_page
    deadline = Deadline(75, "test_threshold_widget_in_jupyterlab")
    write_notebook(server.root_dir, "threshold.ipynb", [THRESHOLD_SETUP, THRESHOLD_WIDGET])

    with screenshot_on_failure(page, tmp_path / "threshold-failure.png"):
        open_notebook(page, server, "threshold.ipynb", deadline)
        run_all_and_wait_for_widget(page, deadline, ".trainkit-threshold .widget-slider")

        saved = json.loads((server.root_dir / "threshold-report.json").read_text())
        y, p1 = np.asarray(saved["y_true"]), np.asarray(saved["scores"])[:, 1]
        neg, pos = saved["classes"]
        assert (neg, pos) == ("benign", "malignant")

        tw = page.locator(".jp-OutputArea-output .trainkit-threshold").first
        slider, shown = slider_by_label(tw, "threshold"), tw.locator(".widget-html-content")

        def displayed() -> tuple[list[list[int]], str]:
            "The confusion counts [[TN, FP], [FN, TP]] and the precision line, as the page shows them."
            rows = html_table(shown, deadline)
            assert rows and rows[0] == ["", f"predicted {neg}", f"predicted {pos}"], rows
            assert [r[0] for r in rows[1:]] == [f"true {neg}", f"true {pos}"], rows
            line = SHOWN.search(shown.inner_text())
            assert line, f"no precision line in {shown.inner_text()!r}"
            return [[int(c) for c in r[1:]] for r in rows[1:]], line.group(0)

        def expect_threshold(readout: str, t_kernel_near: float) -> tuple:
            "Wait for the kernel's slider near the readout, then for the page to show at_threshold at its value."
            assert float(readout) == pytest.approx(t_kernel_near, abs=0.006), readout
            t = wait_for_kernel(page, "tw.slider.value", lambda v: abs(v - float(readout)) < 0.006, deadline,
                                what=f"threshold {readout} from the slider")
            want = _expected_text(at_threshold(y, p1, t))
            expect(shown).to_contain_text(want[1], timeout=deadline.ms(10))
            got = displayed()
            assert got == want, f"at threshold {t}: the page shows {got}, at_threshold gives {want}"
            assert sum(map(sum, got[0])) == len(y)
            return got

        assert slider.locator(".widget-readout").inner_text() == "0.50"
        at_half = expect_threshold("0.50", 0.5)

        # keyboard: four PageDowns on the handle (5 steps of 0.01 each) -> 0.30: more flagged malignant
        at_low = expect_threshold(press_on_slider(slider, ["PageDown"] * 4, deadline), 0.30)
        assert at_low != at_half, "the display did not change from threshold 0.50 to 0.30"
        (tn5, fp5), (fn5, tp5) = at_half[0]
        (tn3, fp3), (fn3, tp3) = at_low[0]
        assert tp3 + fp3 >= tp5 + fp5 and tp3 >= tp5 and fn3 <= fn5, (at_half, at_low)

        # keyboard, one step: ArrowRight -> 0.31
        expect_threshold(press_on_slider(slider, "ArrowRight", deadline), 0.31)

        # mouse: drag the handle to 80 % of the track
        readout = drag_slider(slider, 0.8, deadline)
        at_high = expect_threshold(readout, float(readout))
        assert 0.7 <= float(readout) <= 0.9, f"dragged to 80 % of the track, the slider reads {readout}"
        assert at_high != at_half and at_high[0][1][1] <= tp5, (at_half, at_high)

        # back to 0.50 with the keyboard: the first display again
        press_on_slider(slider, "Home", deadline)
        assert expect_threshold(press_on_slider(slider, ["PageUp"] * 10, deadline), 0.5) == at_half

        # the screenshot at a threshold where both kinds of error show
        expect_threshold(press_on_slider(slider, ["PageDown"] * 3, deadline), 0.35)
        shot = save_screenshot(page, "threshold_widget", tw)
        assert shot.stat().st_size > 10_000
    assert deadline.left() > 0
