"""Tests for trainkit.callbacks: early stopping, the NaN guard, checkpoints, loggers and progress display."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from trainkit.callbacks import (Checkpoint, EarlyStopping, LivePlot, MLflowLogger, NaNGuard, ProgressBar,
                                TensorBoardLogger)
from trainkit.core import DataError
from trainkit.datasets import Datasets, load_datasets
from trainkit.learner import CHECKPOINT_FORMAT, Callback, CancelFit, Learner

N_BATCHES = 20  # digits at batch size 64


@pytest.fixture(scope="module")
def digits() -> Datasets:
    return load_datasets("digits")


def digits_mlp(seed: int = 0, width: int = 64, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 10))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Script(Callback):
    "Overwrite the monitored number of each epoch with scripted values (runs before EarlyStopping and Checkpoint)."
    order = 10

    def __init__(self, key: str, values: list[float]):
        self.key, self.values = key, values

    def after_epoch(self, learn):
        learn.history[-1][self.key] = self.values[learn.epoch]


class Snapshots(Callback):
    "The model's weights at the end of every epoch."
    order = 15

    def __init__(self): self.by_epoch = {}
    def after_epoch(self, learn): self.by_epoch[learn.epoch] = snapshot(learn.model)


# ------------------------------------------------------------------------------------------ EarlyStopping

def test_early_stopping_scripted_patience_and_restore(digits):
    losses = [1.0, 0.9, 0.95, 0.91, 0.92, 0.1, 0.1, 0.1]
    stopper, snaps = EarlyStopping(patience=3), Snapshots()
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[Script("valid_loss", losses), snaps, stopper])
    learn.fit(len(losses), lr=3e-3)
    # best at epoch 1; epochs 2, 3, 4 do not improve -> stop after epoch 4
    assert len(learn.history) == 5 and stopper.stopped_epoch == 4
    assert stopper.best == 0.9 and stopper.best_epoch == 1
    assert same(snapshot(learn.model), snaps.by_epoch[1])  # the best weights are back
    assert not same(snaps.by_epoch[4], snaps.by_epoch[1])


def test_early_stopping_min_delta_and_max_mode(digits):
    acc = [0.5, 0.6, 0.605, 0.61, 0.7]
    stopper = EarlyStopping("accuracy", patience=2, min_delta=0.02)
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[Script("accuracy", acc), stopper])
    learn.fit(len(acc), lr=3e-3)
    assert stopper.mode == "max"
    assert len(learn.history) == 4 and stopper.best == 0.6 and stopper.best_epoch == 1  # +0.005, +0.01 < min_delta


def test_early_stopping_without_restore_keeps_last_weights(digits):
    losses = [1.0, 2.0, 3.0]
    snaps = Snapshots()
    learn = Learner(digits_mlp(), digits, device="cpu",
                    callbacks=[Script("valid_loss", losses), snaps, EarlyStopping(patience=2, restore_best=False)])
    learn.fit(3, lr=3e-3)
    assert len(learn.history) == 3 and same(snapshot(learn.model), snaps.by_epoch[2])


def test_early_stopping_real_run_restores_best(digits):
    "Overfit 96 training rows: validation loss turns up, training stops early, the best weights come back."
    small = Datasets(**{**digits.__dict__, "X_train": digits.X_train[:96], "y_train": digits.y_train[:96]})
    stopper = EarlyStopping(patience=2)
    learn = Learner(digits_mlp(width=256, dropout=0.0), small, device="cpu", batch_size=32, callbacks=[stopper])
    learn.fit(60, lr=3e-2, schedule="constant")
    losses = [h["valid_loss"] for h in learn.history]
    assert len(losses) < 60, "expected an early stop"
    assert stopper.best == min(losses) and stopper.best_epoch == losses.index(min(losses))
    assert len(losses) == stopper.best_epoch + 1 + 2
    assert learn.validate()["loss"] == stopper.best


@pytest.mark.parametrize("monitor, mode", [("valid_loss", "min"), ("train_loss", "min"), ("mae", "min"),
                                           ("rmse", "min"), ("accuracy", "max"), ("f1", "max"),
                                           ("precision", "max"), ("recall", "max")])
def test_mode_inference(monitor, mode, tmp_path):
    assert EarlyStopping(monitor).mode == mode
    assert Checkpoint(tmp_path, monitor=monitor).mode == mode
    other = "max" if mode == "min" else "min"
    assert EarlyStopping(monitor, mode=other).mode == other


def test_early_stopping_bad_arguments(digits):
    with pytest.raises(DataError, match="patience=0"):
        EarlyStopping(patience=0)
    with pytest.raises(DataError, match="Unknown metric 'val_acc'"):  # a typo is caught before training
        EarlyStopping("val_acc")
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[EarlyStopping("val_acc", mode="max")])
    with pytest.raises(DataError, match=r"'val_acc' is not logged; choose from \['epoch', 'train_loss', 'valid_loss'"):
        learn.fit(2, lr=3e-3)


# ----------------------------------------------------------------------------------------------- NaNGuard

class LossLog(Callback):
    order = -20

    def __init__(self): self.losses = []
    def after_loss(self, learn): self.losses.append(float(learn.loss.detach()))


class CheckEverySave(Callback):
    "After every batch, load last.pt (when it exists) and record whether all its tensors are finite."
    order = 40

    def __init__(self, folder): self.folder, self.seen = folder, []

    def after_batch(self, learn):
        path = self.folder / "last.pt"
        if path.exists():
            ck = torch.load(path, map_location="cpu", weights_only=True)
            self.seen.append((ck["position"]["step"], all(torch.isfinite(v).all() for v in ck["model"].values())))


def test_nan_guard_names_the_batch(digits):
    log = LossLog()
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[NaNGuard(), log])
    with pytest.raises(FloatingPointError, match=r"epoch 0, batch \d+") as e:
        learn.fit(3, lr=1e6)
    first_bad = next(i for i, v in enumerate(log.losses) if not math.isfinite(v))
    assert f"epoch 0, batch {first_bad} (step {first_bad})" in str(e.value)


def test_nan_guard_keeps_checkpoints_finite(digits, tmp_path):
    folder = tmp_path / "ck"
    log, watch = LossLog(), CheckEverySave(folder)
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[NaNGuard(), Checkpoint(folder, every=1), log, watch])
    with pytest.raises(FloatingPointError, match="epoch 0, batch"):
        learn.fit(3, lr=1e6)
    assert watch.seen and all(finite for _, finite in watch.seen)
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    ck = torch.load(folder / "last.pt", map_location="cpu", weights_only=True)
    assert ck["format"] == CHECKPOINT_FORMAT
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    first_bad = next(i for i, v in enumerate(log.losses) if not math.isfinite(v))
    assert ck["position"]["step"] == first_bad  # the last good step was saved, nothing after it

    # the good last.pt written before the blow-up still loads into a Learner
    class StopAtOnce(Callback):
        def before_fit(self, learn): raise CancelFit

    again = Learner(digits_mlp(seed=5), digits, device="cpu", callbacks=[StopAtOnce()])
    again.fit(3, lr=1e6, resume=folder / "last.pt")
    assert again.step == first_bad
    assert same(snapshot(again.model), ck["model"])


def test_nan_guard_quiet_on_a_healthy_run(digits):
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[NaNGuard(check_every=1)]).fit(2, lr=3e-3)
    assert len(learn.history) == 2


# --------------------------------------------------------------------------------------------- Checkpoint

def test_checkpoint_best_and_last(digits, tmp_path):
    losses = [1.0, 0.8, 0.9, 0.5, 0.7]

    class Watch(Callback):
        order = 40  # after Checkpoint

        def __init__(self): self.best_epochs, self.last_epochs = [], []

        def after_epoch(self, learn):
            best = torch.load(tmp_path / "best.pt", weights_only=True)
            last = torch.load(tmp_path / "last.pt", weights_only=True)
            self.best_epochs.append(best["history"][-1]["epoch"])
            self.last_epochs.append(last["history"][-1]["epoch"])
            assert best["history"][-1]["valid_loss"] == min(losses[:learn.epoch + 1])

    watch, cp = Watch(), Checkpoint(tmp_path)
    Learner(digits_mlp(), digits, device="cpu", callbacks=[Script("valid_loss", losses), cp, watch]).fit(5, lr=3e-3)
    assert watch.best_epochs == [0, 1, 1, 3, 3]  # best.pt only moves on an improvement
    assert watch.last_epochs == [0, 1, 2, 3, 4]  # last.pt every epoch
    assert cp.best == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary files left
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["position"] == {"epoch": 5, "batch": 0, "step": 5 * N_BATCHES}
    assert last["callbacks"]["Checkpoint"] == {"best": 0.5}


def test_checkpoint_every_n_batches_and_max_mode(digits, tmp_path):
    class Watch(Callback):
        order = 40

        def __init__(self): self.steps = []

        def after_batch(self, learn):
            path = tmp_path / "last.pt"
            if path.exists():
                self.steps.append(torch.load(path, weights_only=True)["position"]["step"])

        after_epoch = after_batch

    watch, cp = Watch(), Checkpoint(tmp_path, every=7, monitor="accuracy")
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[Script("accuracy", [0.5, 0.4]), cp, watch])
    learn.fit(2, lr=3e-3)
    assert cp.mode == "max" and cp.best == 0.5
    assert torch.load(tmp_path / "best.pt", weights_only=True)["history"][-1]["epoch"] == 0
    # saved at steps 7 and 14, at the end of epoch 0 (step 20), then at 21, 28, 35 and the end of epoch 1
    assert sorted(set(watch.steps)) == [7, 14, 20, 21, 28, 35, 40]


def test_checkpoint_state_survives_resume(digits, tmp_path):
    class Stop(Callback):
        order = 40

        def after_epoch(self, learn):
            if learn.epoch == 0:
                raise CancelFit

    Learner(digits_mlp(), digits, device="cpu",
            callbacks=[Script("valid_loss", [0.3, 0.4]), Checkpoint(tmp_path), Stop()]).fit(2, lr=3e-3)
    cp = Checkpoint(tmp_path)
    Learner(digits_mlp(), digits, device="cpu", callbacks=[Script("valid_loss", [0.3, 0.4]), cp]).fit(
        2, lr=3e-3, resume=tmp_path / "last.pt")
    assert cp.best == 0.3  # restored from the checkpoint, so epoch 1's 0.4 is no improvement
    assert torch.load(tmp_path / "best.pt", weights_only=True)["history"][-1]["epoch"] == 0


# ------------------------------------------------------------------------------------ loggers and display

def test_tensorboard_logger_writes_events(digits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "tb"
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[TensorBoardLogger(log_dir)]).fit(2, lr=3e-3)
    events = list(log_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "valid_loss", "accuracy", "precision", "recall", "f1", "lr"} <= tags
    vl = acc.Scalars("valid_loss")
    assert [e.step for e in vl] == [0, 1]
    assert [e.value for e in vl] == pytest.approx([h["valid_loss"] for h in learn.history], rel=1e-6)


def test_live_plot_saves_png_outside_a_notebook(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = tmp_path / "curves.png"
    plot = LivePlot(path)
    Learner(digits_mlp(), digits, device="cpu", callbacks=[plot]).fit(2, lr=3e-3)
    assert plot.live is False and plot.handle is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    Learner(digits_mlp(), digits, device="cpu", callbacks=[LivePlot()]).fit(1, lr=3e-3)  # no path: nothing saved
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_progress_bar(digits, capsys):
    bar = ProgressBar()
    Learner(digits_mlp(), digits, device="cpu", callbacks=[bar]).fit(2, lr=3e-3)
    err = capsys.readouterr().err
    assert f"{2 * N_BATCHES}/{2 * N_BATCHES}" in err and "accuracy=" in err and "valid=" in err
    assert bar.bar.n == 2 * N_BATCHES


def test_progress_bar_regression_and_resume(tmp_path, capsys):
    diabetes = load_datasets("diabetes")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 1), nn.Flatten(0))

    class Stop(Callback):
        def after_batch(self, learn):
            if learn.step == 3:
                learn.save_checkpoint(tmp_path / "ck.pt")
                raise CancelFit

    Learner(model, diabetes, device="cpu", callbacks=[ProgressBar(), Stop()]).fit(2, lr=1e-2)
    bar = ProgressBar()
    learn = Learner(model, diabetes, device="cpu", callbacks=[bar])
    learn.fit(2, lr=1e-2, resume=tmp_path / "ck.pt")
    assert bar.bar.n == 2 * learn.n_batches
    assert "mae=" in capsys.readouterr().err


def test_mlflow_logger_without_mlflow_in_before_fit(digits):
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed")
    learn = Learner(digits_mlp(), digits, device="cpu")
    with pytest.raises(ImportError, match="pip install mlflow"):
        MLflowLogger().before_fit(learn)


def test_mlflow_logger_without_mlflow_in_fit(digits):
    "What a user sees: Learner.fit with an MLflowLogger and no MLflow must raise the ImportError with the hint."
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed")
    learn = Learner(digits_mlp(), digits, device="cpu", callbacks=[MLflowLogger()])
    with pytest.raises(ImportError, match="pip install mlflow"):
        learn.fit(1, lr=3e-3)


def test_mlflow_logger_logs_to_a_local_sqlite_store(tmp_path):
    "With MLflow installed (an optional extra): params and per-epoch metrics land in a local SQLite store."
    mlflow = pytest.importorskip("mlflow")
    from trainkit.callbacks import MLflowLogger
    from trainkit.datasets import load_datasets
    from trainkit.learner import Learner
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    Learner(model, load_datasets("digits"), device="cpu",
            callbacks=[MLflowLogger(tracking_uri=uri, experiment="t", run_name="r")]).fit(2, lr=1e-2)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("t").experiment_id])[0]
    assert run.data.params["epochs"] == "2" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_loss")] == [0, 1]
