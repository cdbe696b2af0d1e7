"""The CUDA-graph runner's CPU-testable parts: its plan and its warning about per-step callbacks.

The capture and replay themselves need CUDA: tests/test_gpu.py runs them."""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from trainkit.callbacks import Checkpoint, NaNGuard, ProgressBar
from trainkit.datasets import load_datasets
from trainkit.graphs import CudaGraphRunner, warn_step_callbacks
from trainkit.learner import Callback, Learner
from trainkit.models import MLP
from trainkit.tune import L1Penalty


@pytest.fixture(scope="module")
def digits():
    return load_datasets("digits")


def runner_without_gpu(n_rows: int, batch_size: int, max_steps: int = 64) -> CudaGraphRunner:
    "A runner with only what `plan` reads: no GPU, no Learner."
    r = CudaGraphRunner.__new__(CudaGraphRunner)
    r.L, r.max_steps = SimpleNamespace(batch_size=batch_size), max_steps
    r.n_full, r.tail = divmod(n_rows, batch_size)
    return r


def test_plan_holds_every_step_once():
    assert runner_without_gpu(1257, 64).plan(0) == [(64,) * 19 + (41,)]
    assert runner_without_gpu(1257, 64).plan(5) == [(64,) * 14 + (41,)]  # resumed mid-epoch
    assert runner_without_gpu(1280, 64).plan(0) == [(64,) * 20]  # no partial last batch
    plan = runner_without_gpu(50_000, 256).plan(0)
    assert [len(g) for g in plan] == [64, 64, 64, 4] and sum(map(sum, plan)) == 50_000


def test_warns_about_callbacks_a_replay_never_calls():
    class AfterStep(Callback):
        def after_step(self, learn): pass

    with pytest.warns(UserWarning, match="NaNGuard.after_loss, L1Penalty.after_loss, AfterStep.after_step will not run"):
        skipped = warn_step_callbacks([NaNGuard(), L1Penalty(), AfterStep(), ProgressBar()])
    assert skipped == ["NaNGuard.after_loss", "L1Penalty.after_loss", "AfterStep.after_step"]


def test_no_warning_for_per_batch_and_per_epoch_callbacks(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_step_callbacks([ProgressBar(), Checkpoint(tmp_path)]) == []


def test_the_runner_warns_once_the_run_is_captured(monkeypatch):
    "The GPU steps replaced by no-ops: the check sits after the refusals, before any capture."
    def passes(self):
        self.n_full, self.tail = 19, 41
    monkeypatch.setattr(CudaGraphRunner, "_check_learner", passes)
    for name in ("_static_buffers", "_warm_up", "_capture"):
        monkeypatch.setattr(CudaGraphRunner, name, lambda self, *a: None)
    learn = SimpleNamespace(callbacks=[NaNGuard()], batch_size=64)
    with pytest.warns(UserWarning, match="NaNGuard.after_loss will not run"):
        CudaGraphRunner(learn)


def test_eager_fallback_does_not_warn_about_callbacks(digits):
    "On a CPU the run falls back to eager training, where after_loss runs: only the fallback is reported."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Learner(MLP(64, 10, (32,)), digits, device="cpu", cuda_graph=True, callbacks=[NaNGuard()]).fit(1)
    messages = [str(w.message) for w in caught]
    assert any("needs CUDA" in m for m in messages), messages
    assert not any("will not run" in m for m in messages), messages
