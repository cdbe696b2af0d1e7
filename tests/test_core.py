"""Tests for the course helpers in trainkit.core that notebooks cannot show on their own: check_exercise's two
modes (a learner's Run All goes on; CI fails on a wrong solution), and the plot style (palette, labels, integer
epoch ticks, the training-history plot) in figures made without pyplot, as widgets and reports make them."""
from __future__ import annotations

import pytest

from trainkit.core import DataError, PALETTE, check_exercise, new_figure, plot_history, style_axes

plt = pytest.importorskip("matplotlib.pyplot")


def _stub():
    raise NotImplementedError


def _wrong():
    from fastcore.test import test_eq
    test_eq(2 + 2, 5)


def test_check_exercise_prints_in_print_mode(monkeypatch, capsys):
    monkeypatch.setenv("TRAINKIT_EXERCISES", "print")
    check_exercise(_stub, "write the body", "Exercise 1")
    check_exercise(_wrong, "add, do not multiply", "Exercise 2")
    check_exercise(lambda: None, "-", "Exercise 3")
    out = capsys.readouterr().out
    assert "✗ Exercise 1: not written yet" in out and "Hint: write the body" in out
    assert "✗ Exercise 2: not yet, got 4, expected 5" in out and "Hint: add, do not multiply" in out
    assert "✓ Exercise 3: correct." in out


def test_check_exercise_is_strict_under_nbdev_test(monkeypatch):
    monkeypatch.delenv("TRAINKIT_EXERCISES", raising=False)
    monkeypatch.setenv("IN_TEST", "1")
    with pytest.raises(AssertionError):
        check_exercise(_wrong, "hint")
    with pytest.raises(NotImplementedError):
        check_exercise(_stub, "hint")
    monkeypatch.setenv("TRAINKIT_EXERCISES", "print")  # the student edition under test: prints instead
    check_exercise(_stub, "hint")


def test_check_exercise_refuses_an_unknown_mode(monkeypatch):
    monkeypatch.setenv("TRAINKIT_EXERCISES", "loud")
    with pytest.raises(DataError, match="TRAINKIT_EXERCISES='loud'"):
        check_exercise(lambda: None, "hint")


def test_plot_style_without_pyplot():
    fig, (a, b) = new_figure(2, pyplot=False)
    assert not plt.get_fignums()  # a bare Figure: nothing left open in pyplot
    history = [{"epoch": e, "train_loss": 1 / (e + 1), "valid_loss": 1.2 / (e + 1), "accuracy": 0.5 + e / 10}
               for e in range(3)]
    plot_history(history, ax=a, label="run 1")
    plot_history(history, ax=b, keys=("accuracy",), title="Validation accuracy", ylabel="accuracy")
    assert [l.get_label() for l in a.lines] == ["run 1 valid_loss", "run 1 train_loss"]
    assert list(a.lines[0].get_xdata()) == [1, 2, 3]  # epochs counted from 1
    assert a.lines[0].get_color() == a.lines[1].get_color() == PALETTE[0]
    assert all(float(t).is_integer() for t in a.get_xticks())
    assert (a.get_xlabel(), a.get_ylabel(), b.get_ylabel()) == ("epoch", "loss", "accuracy")
    assert a.get_legend() is not None
    ax = style_axes(new_figure(pyplot=False)[1], "t", "x (mm)", "y (g)")
    assert ax.get_legend() is None  # nothing labelled, no empty legend


def test_a_one_epoch_history_is_visible_with_whole_epoch_ticks():
    "A run stopped after one epoch: both losses show a dot, and the x ticks are whole epochs, not 0.945, 0.960, ..."
    fig, ax = new_figure(pyplot=False)
    plot_history([{"epoch": 0, "train_loss": 0.9, "valid_loss": 1.0}], ax=ax)
    assert all(l.get_marker() not in (None, "None", "") for l in ax.lines)  # a dashed line alone draws nothing for one point
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
