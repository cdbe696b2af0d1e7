"""The workshop guide (docs/workshop.md) is what tools/workshop.py generates from the notebooks, so it stays true."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import workshop  # noqa: E402  tools/workshop.py


def test_committed_guide_is_up_to_date():
    committed = (ROOT / "docs" / "workshop.md").read_text(encoding="utf-8")
    assert committed == workshop.render(), (
        "docs/workshop.md differs from what tools/workshop.py writes from the notebooks "
        "(a chapter's summary, Time line, imports or widgets changed): run `.venv/bin/python tools/workshop.py`")


def test_time_phrases_are_read_as_their_largest_duration():
    cases = {"about 5 seconds on a 2-core laptop": 5, "about a minute on a 2-core laptop": 60,
             "2 to 4 minutes on a 2-core laptop (most of it the search of 30 trials)": 240,
             "under a minute on a quiet 2-core laptop, up to 3 minutes on a busy one": 180,
             "under a minute on a 2-core laptop (22 s measured on an idle one, 45 s on a busy one)": 60,
             "about 1 minute on a 2-core laptop (about 20 seconds when nothing else is running)": 60}
    for phrase, seconds in cases.items():
        assert workshop.run_seconds(phrase) == seconds, phrase


def test_every_chapter_is_in_the_guide_with_a_time():
    chapters = {c.stem: c for c in workshop.reduce_needs(
        [workshop.read_chapter(p, workshop.module_owners(), [q.stem for q in workshop.chapters()])
         for p in workshop.chapters()])}
    text = workshop.render()
    for stem in chapters:
        assert f"[{stem}](../nbs/{stem}.ipynb)" in text, stem
    assert chapters["00_core"].read_min > 0 and chapters["00_core"].run_s > 0
    assert "01a_data" in chapters["01b_clean"].needs  # "You need" and imports, earlier chapters only
    assert chapters["04b_panel"].widgets == ["TuningPanel.widget"]
    tracks = workshop.tracks(list(chapters.values()))
    for name, (taught, _) in tracks.items():
        assert sum(c.minutes for c in taught) <= workshop.BUDGET[name], name
