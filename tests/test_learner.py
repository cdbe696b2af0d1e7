"""Tests for trainkit.learner: SIGKILL-safe resume, determinism, metrics oracles, input checks, the loop."""
from __future__ import annotations

import copy
import json
import math
import os
import pickle
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error
from torch import nn

from trainkit.callbacks import Checkpoint
from trainkit.core import DataError
from trainkit.datasets import Datasets, load_datasets
from trainkit.learner import CHECKPOINT_FORMAT, Callback, CancelBatch, CancelEpoch, CancelFit, Learner
from trainkit.models import MLP

WORKER = Path(__file__).with_name("resume_worker.py")
N_BATCHES = 20  # digits: 1257 training rows at batch size 64


# ------------------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def digits() -> Datasets:
    return load_datasets("digits")


@pytest.fixture(scope="module")
def diabetes() -> Datasets:
    return load_datasets("diabetes")


def digits_mlp(seed: int = 0, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 10))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs (max abs diff {float((a[k] - b[k]).abs().max()):.3g})"


def replace(d: Datasets, **kw) -> Datasets:
    "A copy of `d` with some fields replaced."
    return Datasets(**{**d.__dict__, **kw})


class Record(Callback):
    "Record every event's call, and the learning rate used by each step."
    order = 100

    def __init__(self):
        self.events, self.lrs = [], []

    def before_fit(self, learn): self.events.append("before_fit")
    def before_epoch(self, learn): self.events.append("before_epoch")
    def after_epoch(self, learn): self.events.append("after_epoch")
    def after_fit(self, learn): self.events.append("after_fit")

    def before_batch(self, learn):
        self.lrs.append(float(learn.opt.param_groups[0]["lr"]))


class StopAfter(Callback):
    "Save a checkpoint after `n` batches and stop (a polite crash)."
    def __init__(self, n, path): self.n, self.path = n, path

    def after_batch(self, learn):
        if learn.step == self.n:
            learn.save_checkpoint(self.path)
            raise CancelFit


# ------------------------------------------------------------------------------------- SIGKILL and resume

class Worker:
    "A `resume_worker.py` subprocess whose stdout lines are read by a thread into a queue."

    def __init__(self, folder: Path, out: Path, env: dict, hold: str | None = None):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.err_path = out / "stderr.txt"
        self.err = open(self.err_path, "w")
        args = [sys.executable, str(WORKER), str(folder), str(out)] + ([hold] if hold else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, text=True, env=env,
                                     cwd=str(out))
        self.lines: list[str] = []
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def read_until(self, target: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {target!r} within {timeout}s; got {self.lines[-3:]}") from None
            if line is None:
                raise AssertionError(f"worker ended before {target!r}: rc={self.proc.wait()}, "
                                     f"stderr:\n{self.err_path.read_text()[-3000:]}")
            self.lines.append(line)
            if line == target:
                return

    def finish(self, timeout: float = 120) -> list[str]:
        self.read_until("done", timeout)
        assert self.proc.wait(timeout=timeout) == 0, self.err_path.read_text()[-3000:]
        self.err.close()
        return self.lines

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL
        self.err.close()

    def cleanup(self):
        "Kill the worker if it is still running (a failed test must not leave workers sleeping)."
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.err.close()

    def result(self):
        w = torch.load(self.out / "weights.pt", weights_only=True)
        h = json.loads((self.out / "history.json").read_text())
        return w, h


@pytest.fixture
def workers():
    "Started workers, all killed at teardown if still running."
    started: list[Worker] = []
    yield started
    for w in started:
        w.cleanup()


def test_sigkill_resume_is_bit_identical(tmp_path, isolated_dirs, workers):
    """Kill the worker with SIGKILL mid-epoch 0, mid-epoch 1, at an epoch boundary and before the last epoch's end;
    resume from last.pt in a new process; the final weights and history equal an uninterrupted run's, bit for bit."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINKIT_DEVICE", "TRAINKIT_FAST")}
    env.update(TRAINKIT_DATA=str(isolated_dirs["data"]), TRAINKIT_ARTIFACTS=str(isolated_dirs["artifacts"]),
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    # hold line -> (the checkpoint position the kill must leave behind, the history entries it holds)
    kills = {
        "step 8": ({"epoch": 0, "batch": 6, "step": 6}, 0),  # mid-epoch 0 (last save at step 6)
        "step 32": ({"epoch": 1, "batch": 10, "step": 30}, 1),  # mid-epoch 1 (last save at step 30)
        "epoch_end 0": ({"epoch": 1, "batch": 0, "step": 20}, 1),  # just after epoch 0's end-of-epoch save
        "step 60": ({"epoch": 2, "batch": 20, "step": 60}, 2),  # last batch done, epoch 2 not yet validated
    }
    # every process pays the torch import: start them all at once, the killed ones wait at their hold line
    ref = Worker(tmp_path / "ref_ck", tmp_path / "ref", env)
    victims = {h: Worker(tmp_path / f"ck{i}", tmp_path / f"kill{i}", env, hold=h) for i, h in enumerate(kills)}
    workers += [ref, *victims.values()]
    for hold, w in victims.items():
        w.read_until(hold)
        w.kill()

    resumed = {}
    for i, (hold, (position, n_hist)) in enumerate(kills.items()):
        folder = tmp_path / f"ck{i}"
        assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp")), f"temporary files after {hold}"
        ck = torch.load(folder / "last.pt", map_location="cpu", weights_only=True)
        assert ck["format"] == CHECKPOINT_FORMAT
        assert ck["position"] == position, hold
        assert len(ck["history"]) == n_hist, hold
        assert all(torch.isfinite(v).all() for v in ck["model"].values())
        resumed[hold] = Worker(folder, tmp_path / f"resumed{i}", env)
        workers.append(resumed[hold])

    ref_lines = ref.finish()
    assert ref_lines[0] == "fresh" and f"step {3 * N_BATCHES}" in ref_lines
    ref_w, ref_h = ref.result()
    assert [h["epoch"] for h in ref_h] == [0, 1, 2]
    for hold, w in resumed.items():
        lines = w.finish()
        position = kills[hold][0]
        assert lines[0] == "resume", hold
        # it really resumed: the first thing it did is the step after the checkpoint
        first = lines[1]
        expected = "epoch_end 2" if position["step"] == 3 * N_BATCHES else f"step {position['step'] + 1}"
        assert first == expected, (hold, lines[:3])
        got_w, got_h = w.result()
        assert_same_weights(ref_w, got_w)
        assert got_h == ref_h, hold


# ------------------------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_weights_and_history(digits):
    a = Learner(digits_mlp(), digits, device="cpu", seed=7).fit(2, lr=3e-3)
    b = Learner(digits_mlp(), digits, device="cpu", seed=7).fit(2, lr=3e-3)
    assert_same_weights(weights(a.model), weights(b.model))
    assert a.history == b.history


def test_different_seed_gives_different_weights(digits):
    a = Learner(digits_mlp(), digits, device="cpu", seed=7).fit(2, lr=3e-3)
    b = Learner(digits_mlp(), digits, device="cpu", seed=8).fit(2, lr=3e-3)
    assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert a.history != b.history


def test_learner_seed_controls_dropout(digits):
    """`seed` is documented to seed 'shuffling and dropout': identical weights and Learner seed must give identical
    results whatever the global RNG happens to be when `fit` starts."""
    m1 = digits_mlp()
    m2 = copy.deepcopy(m1)
    torch.manual_seed(123)
    a = Learner(m1, digits, device="cpu", seed=5).fit(2, lr=3e-3)
    torch.manual_seed(456)
    b = Learner(m2, digits, device="cpu", seed=5).fit(2, lr=3e-3)
    assert_same_weights(weights(a.model), weights(b.model))


# ----------------------------------------------------------------------------------------------- metrics

# ------------------------------------------------------------------------------------------- bad inputs

def _bad_data_cases(d: Datasets):
    bad_label = d.y_train.clone()
    bad_label[3] = 10
    neg_label = d.y_valid.clone()
    neg_label[0] = -1
    return {
        "label_outside_classes": (replace(d, y_train=bad_label), "labels outside 0..9"),
        "negative_label_in_valid": (replace(d, y_valid=neg_label), "valid split has labels outside"),
        "empty_train": (replace(d, X_train=d.X_train[:0], y_train=d.y_train[:0]), "train split is empty"),
        "empty_valid": (replace(d, X_valid=d.X_valid[:0], y_valid=d.y_valid[:0]), "valid split is empty"),
        "xy_length_mismatch": (replace(d, y_train=d.y_train[:-5]), "1257 inputs but 1252 targets"),
        "xy_length_mismatch_valid": (replace(d, X_valid=d.X_valid[:-1]), "valid split has 269 inputs but 270"),
        "float_targets": (replace(d, y_train=d.y_train.float()), "int64 class indices"),
    }


@pytest.mark.parametrize("case", ["label_outside_classes", "negative_label_in_valid", "empty_train", "empty_valid",
                                  "xy_length_mismatch", "xy_length_mismatch_valid", "float_targets"])
def test_bad_data_raises_before_training(digits, case):
    data, message = _bad_data_cases(digits)[case]
    with pytest.raises(DataError, match=message):
        Learner(digits_mlp(), data, device="cpu")


def test_model_output_shape_mismatch(digits, diabetes):
    with pytest.raises(DataError, match=r"output is \(2, 5\).*10 classes need \(2, 10\)"):
        Learner(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), digits, device="cpu")
    with pytest.raises(DataError, match="regression needs one number each"):
        Learner(MLP(10, 2), diabetes, device="cpu")


def test_model_that_cannot_take_the_input(digits):
    with pytest.raises(DataError, match=r"cannot take the data: input shape \(1, 8, 8\)") as e:
        Learner(nn.Linear(64, 10), digits, device="cpu")
    assert isinstance(e.value.__cause__, RuntimeError)


class Explode(Callback):
    "Fail the test if training ever starts."
    def before_fit(self, learn): raise AssertionError("training started")


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs=0"),
    ({"epochs": -2}, "epochs=-2"),
    ({"epochs": 2.0}, "epochs=2.0"),
    ({"epochs": "3"}, "epochs='3'"),
    ({"epochs": 1, "lr": 0}, "lr=0"),
    ({"epochs": 1, "lr": -1e-3}, "lr=-0.001"),
    ({"epochs": 1, "lr": float("nan")}, "lr=nan"),
    ({"epochs": 1, "lr": float("inf")}, "lr=inf"),
    ({"epochs": 1, "lr": "0.1"}, "lr='0.1'"),
    ({"epochs": 1, "schedule": "cosine"}, "schedule='cosine'.*'onecycle' or 'constant'"),
])
def test_bad_fit_arguments(digits, kwargs, message):
    model = digits_mlp()
    before = weights(model)
    learn = Learner(model, digits, device="cpu", callbacks=[Explode()])
    with pytest.raises(DataError, match=message):
        learn.fit(**kwargs)
    assert_same_weights(before, weights(learn.model))


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size=0"),
    ({"batch_size": -1}, "batch_size=-1"),
    ({"batch_size": 2.5}, "batch_size=2.5"),
    ({"precision": "fp8"}, "precision='fp8'"),
    ({"precision": "FP32"}, "precision='FP32'"),
])
def test_bad_learner_arguments(digits, kwargs, message):
    with pytest.raises(DataError, match=message):
        Learner(digits_mlp(), digits, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits) -> Path:
    "A checkpoint written after step 27 of a 2-epoch digits run (lr 3e-3, one-cycle, seed 42, batch 64)."
    path = tmp_path_factory.mktemp("ck") / "ck.pt"
    Learner(digits_mlp(), digits, device="cpu", callbacks=[StopAfter(27, path)]).fit(2, lr=3e-3)
    return path


def test_resume_from_checkpoint_of_a_different_model(digits, checkpoint):
    other = Learner(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, device="cpu", callbacks=[Explode()])
    before = weights(other.model)
    with pytest.raises(DataError, match="different model"):
        other.fit(2, lr=3e-3, resume=checkpoint)
    assert_same_weights(before, weights(other.model))
    with_identity = Learner(digits_mlp().append(nn.Identity()), digits, device="cpu")  # same parameters
    wide = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))
    with pytest.raises(DataError, match="different model"):  # same names, other shapes
        Learner(wide, digits, device="cpu").fit(2, lr=3e-3, resume=checkpoint)
    with_identity.fit(2, lr=3e-3, resume=checkpoint)  # an Identity adds no parameters: resumes fine


@pytest.mark.parametrize("fit_kw, learner_kw", [
    ({"epochs": 3}, {}),
    ({"epochs": 2, "lr": 1e-3}, {}),
    ({"epochs": 2, "schedule": "constant"}, {}),
    ({"epochs": 2}, {"batch_size": 32}),
    ({"epochs": 2}, {"seed": 1}),
])
def test_resume_with_a_different_plan(digits, checkpoint, fit_kw, learner_kw):
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[Explode()], **learner_kw)
    with pytest.raises(DataError, match="Resume with the same epochs, lr, schedule"):
        learn.fit(**{"lr": 3e-3, **fit_kw}, resume=checkpoint)


def test_resume_from_a_missing_file(digits, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Learner(digits_mlp(), digits, device="cpu").fit(2, resume=tmp_path / "nope.pt")
    with pytest.raises(DataError, match="does not exist"):  # a folder is not a checkpoint file
        Learner(digits_mlp(), digits, device="cpu").fit(2, resume=tmp_path)


class Evil:
    "Unpickling this runs a shell command that creates `marker`."
    def __init__(self, marker: Path): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def tripwire(monkeypatch):
    "Record any use of the unrestricted pickle machinery."
    calls = []
    real_unpickler = pickle.Unpickler

    class Tripped(real_unpickler):
        def __init__(self, *a, **k):
            calls.append("Unpickler")
            super().__init__(*a, **k)

    monkeypatch.setattr(pickle, "Unpickler", Tripped)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append("loads") or pytest.fail("pickle.loads used"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append("load") or pytest.fail("pickle.load used"))
    return calls


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoint_never_runs_code(digits, tmp_path, tripwire):
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw_pickle.pt"
    raw.write_bytes(pickle.dumps(Evil(marker)))  # pickle.dumps is not patched
    zipped = tmp_path / "torch_saved.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": Evil(marker)}, zipped)
    for path in (raw, zipped):
        learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[Explode()])
        with pytest.raises(DataError, match="not a readable trainkit checkpoint"):
            learn.fit(2, lr=3e-3, resume=path)
    assert not marker.exists(), "loading a checkpoint executed code"
    assert tripwire == []


def test_malicious_payload_is_live(tmp_path):
    "Control for the test above: unpickling the payload unrestricted does create the marker."
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.exists()


def test_files_that_are_not_checkpoints(digits, tmp_path, tripwire):
    cases = {"random.pt": os.urandom(4096), "empty.pt": b"", "text.pt": b"hello, world\n",
             "dict_pickle.pt": pickle.dumps({"format": CHECKPOINT_FORMAT, "model": {}}, protocol=2)}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain_dict.pt")
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    torch.save({"format": "trainkit-checkpoint-0"}, tmp_path / "old_format.pt")
    for path in sorted(tmp_path.glob("*.pt")):
        learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[Explode()])
        with pytest.raises(DataError, match="not a (readable )?trainkit checkpoint") as e:
            learn.fit(2, lr=3e-3, resume=path)
        assert path.name in str(e.value)
    assert tripwire == []


def test_cuda_graph_on_cpu_warns_and_trains_eagerly(digits):
    learn = Learner(digits_mlp(), digits, device="cpu", cuda_graph=True)
    with pytest.warns(UserWarning, match="CUDA-graph mode is off"):
        learn.fit(2, lr=3e-3)
    eager = Learner(digits_mlp(), digits, device="cpu").fit(2, lr=3e-3)
    assert len(learn.history) == 2 and learn.step == 2 * N_BATCHES
    assert_same_weights(weights(eager.model), weights(learn.model))
    assert learn.history == eager.history


def test_bf16_on_cpu_warns_and_trains_fp32(digits):
    with pytest.warns(UserWarning, match="needs CUDA; training in fp32"):
        learn = Learner(digits_mlp(), digits, device="cpu", precision="bf16")
    assert learn.precision == "fp32"
    learn.fit(2, lr=3e-3)
    fp32 = Learner(digits_mlp(), digits, device="cpu").fit(2, lr=3e-3)
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert_same_weights(weights(fp32.model), weights(learn.model))


# --------------------------------------------------------------------------------------------- behaviour

def test_onecycle_lr_rises_then_falls(digits):
    rec = Record()
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[rec]).fit(3, lr=1e-2)
    lrs = np.array(rec.lrs)
    assert len(lrs) == 3 * N_BATCHES
    peak = int(lrs.argmax())
    assert 0.2 * len(lrs) <= peak <= 0.3 * len(lrs)  # pct_start=0.25
    assert lrs[peak] == pytest.approx(1e-2)
    assert (np.diff(lrs[:peak + 1]) > 0).all() and (np.diff(lrs[peak:]) < 0).all()
    assert lrs[0] == pytest.approx(1e-2 / 25) and lrs[-1] < lrs[0] / 100
    np.testing.assert_allclose(lrs, learn.lr_table(), rtol=1e-12)  # the table the CUDA-graph runner replays


def test_constant_schedule_keeps_lr(digits):
    rec = Record()
    Learner(digits_mlp(), digits, device="cpu", callbacks=[rec]).fit(2, lr=5e-3, schedule="constant")
    assert rec.lrs == [5e-3] * (2 * N_BATCHES)


def test_custom_optimizer_lr_mismatch_warns_under_constant_schedule(digits):
    sgd = lambda lr: (lambda ps: torch.optim.SGD(ps, lr=lr))
    rec = Record()
    with pytest.warns(UserWarning, match=r"optimizer's own learning rate \[0.5\], not fit's lr=0.05"):
        learn = Learner(digits_mlp(), digits, opt=sgd(0.5), device="cpu", callbacks=[rec]).fit(1, lr=0.05, schedule="constant")
    assert rec.lrs == [0.5] * N_BATCHES  # the optimizer's rate is the one used, as the warning says
    assert learn.lr_table() == [0.05] * N_BATCHES  # ...while fit's lr is what the table records
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the rates agree, or when one-cycle sets them from lr
        Learner(digits_mlp(), digits, opt=sgd(0.05), device="cpu").fit(1, lr=0.05, schedule="constant")
        Learner(digits_mlp(), digits, opt=sgd(0.5), device="cpu").fit(1, lr=0.05)


def test_history_and_validate_classification(digits):
    learn = Learner(digits_mlp(), digits, device="cpu").fit(3, lr=3e-3)
    assert [h["epoch"] for h in learn.history] == [0, 1, 2]
    for h in learn.history:
        assert set(h) == {"epoch", "train_loss", "valid_loss", "accuracy", "precision", "recall", "f1"}
        assert all(math.isfinite(v) for v in h.values())
    assert learn.history[-1]["valid_loss"] < learn.history[0]["valid_loss"]
    v = learn.validate("valid")
    assert v["loss"] == learn.history[-1]["valid_loss"] and v["accuracy"] == learn.history[-1]["accuracy"]
    t = learn.validate("test")
    assert set(t) == {"loss", "accuracy", "precision", "recall", "f1"} and 0.5 < t["accuracy"] <= 1
    # validate("test") agrees with the model and sklearn
    with torch.no_grad():
        pred = learn.model(digits.X_test).argmax(1)
    assert t["accuracy"] == pytest.approx(accuracy_score(digits.y_test, pred))
    assert learn.validate("train")["loss"] > 0


def test_history_and_predict_regression(diabetes):
    torch.manual_seed(0)
    learn = Learner(MLP(10, 1), diabetes, device="cpu").fit(3, lr=1e-2)
    for h in learn.history:
        assert set(h) == {"epoch", "train_loss", "valid_loss", "mae", "rmse"}
    pred = learn.predict(diabetes.X_valid)
    assert pred.shape == (len(diabetes.X_valid),) and pred.device.type == "cpu"
    h = learn.history[-1]
    assert h["mae"] == pytest.approx(mean_absolute_error(diabetes.y_valid, pred), rel=1e-5)
    assert h["rmse"] == pytest.approx(math.sqrt(mean_squared_error(diabetes.y_valid, pred)), rel=1e-5)
    assert h["valid_loss"] == pytest.approx(h["rmse"] ** 2, rel=1e-4)  # MSE loss
    assert set(learn.validate("test")) == {"loss", "mae", "rmse"}


def test_predict_classification_probabilities(digits):
    learn = Learner(digits_mlp(), digits, device="cpu").fit(2, lr=3e-3)
    probs = learn.predict(digits.X_valid)
    assert probs.shape == (len(digits.X_valid), 10) and probs.device.type == "cpu"
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))
    acc = float((probs.argmax(1) == digits.y_valid).float().mean())
    assert acc == pytest.approx(learn.validate()["accuracy"])
    assert learn.predict(digits.X_valid[:3].numpy()).shape == (3, 10)  # numpy input


def test_cancel_batch_skips_updates(digits):
    class SkipAll(Callback):
        def before_batch(self, learn): raise CancelBatch

    model = digits_mlp()
    before = weights(model)
    learn = Learner(model, digits, device="cpu", callbacks=[SkipAll()]).fit(2, lr=3e-3)
    assert_same_weights(before, weights(learn.model))  # no step was taken
    assert learn.step == 2 * N_BATCHES and len(learn.history) == 2
    assert all(h["train_loss"] == 0.0 for h in learn.history)

    class SkipAfterLoss(Callback):
        def __init__(self): self.seen = 0
        def after_loss(self, learn):
            self.seen += 1
            if learn.batch % 2:
                raise CancelBatch

        def after_step(self, learn): assert learn.batch % 2 == 0, "a cancelled step must not reach after_step"

    cb = SkipAfterLoss()
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[cb]).fit(1, lr=3e-3)
    assert cb.seen == N_BATCHES and learn.step == N_BATCHES
    full = Learner(digits_mlp(), digits, device="cpu").fit(1, lr=3e-3)
    assert any(not torch.equal(p, q) for p, q in zip(full.model.parameters(), learn.model.parameters()))


def test_cancel_epoch_ends_epoch_and_still_validates(digits):
    class ThreeBatches(Callback):
        def after_batch(self, learn):
            if learn.batch == 3:
                raise CancelEpoch

    rec = Record()
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[ThreeBatches(), rec]).fit(3, lr=3e-3)
    assert learn.step == 9 and len(rec.lrs) == 9
    assert [h["epoch"] for h in learn.history] == [0, 1, 2]
    assert all("valid_loss" in h and "accuracy" in h for h in learn.history)
    assert rec.events == ["before_fit"] + ["before_epoch", "after_epoch"] * 3 + ["after_fit"]


def test_cancel_epoch_in_before_epoch(digits):
    "CancelEpoch raised in before_epoch ends that epoch (validation still runs); it must not escape `fit`."
    class SkipFirstEpoch(Callback):
        def before_epoch(self, learn):
            if learn.epoch == 0:
                raise CancelEpoch

    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[SkipFirstEpoch()]).fit(2, lr=3e-3)
    assert [h["epoch"] for h in learn.history] == [0, 1]
    assert learn.step == N_BATCHES


def test_cancel_fit_stops_cleanly(digits):
    class StopAt(Callback):
        def after_batch(self, learn):
            if learn.step == 25:
                raise CancelFit

    rec = Record()
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[StopAt(), rec])
    assert learn.fit(3, lr=3e-3) is learn  # no exception
    assert learn.step == 25 and len(learn.history) == 1
    assert rec.events[-1] == "after_fit" and rec.events.count("after_epoch") == 1
    assert not learn.model.training


def test_streaming_without_dropout_matches_in_memory(digits):
    mem = Learner(digits_mlp(dropout=0.0), digits, device="cpu").fit(2, lr=3e-3)
    stream = Learner(digits_mlp(dropout=0.0), digits, device="cpu", max_device_bytes=0)
    assert mem.on_device and not stream.on_device
    stream.fit(2, lr=3e-3)
    assert_same_weights(weights(mem.model), weights(stream.model))
    assert mem.history == stream.history


def test_streaming_matches_in_memory(digits):
    "The digits MLP (with dropout): streamed through a DataLoader or indexed in memory, same seed, same bits."
    mem = Learner(digits_mlp(), digits, device="cpu").fit(2, lr=3e-3)
    stream = Learner(digits_mlp(), digits, device="cpu", max_device_bytes=0).fit(2, lr=3e-3)
    assert not stream.on_device
    assert_same_weights(weights(mem.model), weights(stream.model))
    assert mem.history == stream.history


def test_streaming_resume_is_bit_identical(digits, tmp_path):
    straight = Learner(digits_mlp(), digits, device="cpu", max_device_bytes=0).fit(2, lr=3e-3)
    Learner(digits_mlp(), digits, device="cpu", max_device_bytes=0,
            callbacks=[StopAfter(27, tmp_path / "ck.pt")]).fit(2, lr=3e-3)
    resumed = Learner(digits_mlp(seed=1), digits, device="cpu", max_device_bytes=0)
    resumed.fit(2, lr=3e-3, resume=tmp_path / "ck.pt")
    assert_same_weights(weights(straight.model), weights(resumed.model))
    assert straight.history == resumed.history


def test_in_memory_resume_mid_epoch_is_bit_identical(digits, checkpoint):
    straight = Learner(digits_mlp(), digits, device="cpu").fit(2, lr=3e-3)
    resumed = Learner(digits_mlp(seed=1), digits, device="cpu").fit(2, lr=3e-3, resume=checkpoint)
    assert_same_weights(weights(straight.model), weights(resumed.model))
    assert straight.history == resumed.history


def test_epoch_end_checkpoint_resumes_without_duplicate_history(digits, tmp_path):
    class StopAfterEpoch(Callback):
        order = 40  # after Checkpoint (30) has saved last.pt

        def after_epoch(self, learn):
            if learn.epoch == 1:
                raise CancelFit

    folder = tmp_path / "ck"
    straight = Learner(digits_mlp(), digits, device="cpu").fit(3, lr=3e-3)
    first = Learner(digits_mlp(), digits, device="cpu", callbacks=[Checkpoint(folder), StopAfterEpoch()])
    first.fit(3, lr=3e-3)
    ck = torch.load(folder / "last.pt", weights_only=True)
    assert ck["position"] == {"epoch": 2, "batch": 0, "step": 2 * N_BATCHES}
    assert [h["epoch"] for h in ck["history"]] == [0, 1]
    rec = Record()
    resumed = Learner(digits_mlp(seed=3), digits, device="cpu", callbacks=[Checkpoint(folder), rec])
    resumed.fit(3, lr=3e-3, resume=folder / "last.pt")
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert rec.events.count("after_epoch") == 1 and len(rec.lrs) == N_BATCHES
    assert resumed.history == straight.history
    assert_same_weights(weights(straight.model), weights(resumed.model))


def test_repr_and_n_batches(digits):
    learn = Learner(digits_mlp(), digits, device="cpu")
    assert learn.n_batches == N_BATCHES
    assert Learner(digits_mlp(), digits, device="cpu", batch_size=1257).n_batches == 1
    assert repr(learn) == "Learner(Sequential, 4,810 parameters, digits on cpu)"
