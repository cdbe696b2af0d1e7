"""Subprocess entry point for the SIGKILL-resume test in tests/test_learner.py.

    python resume_worker.py CKPT_FOLDER OUT_FOLDER [HOLD]

Trains the digits MLP (fixed seed) for 3 epochs at lr=3e-3 with `Checkpoint(CKPT_FOLDER, every=3)`,
resuming from CKPT_FOLDER/last.pt when it exists. Prints `fresh` or `resume`, then `step N` after every
batch and `epoch_end E` after every epoch (after the Checkpoint callback has saved), flushing each line.
When a printed line equals HOLD (e.g. `step 8` or `epoch_end 0`) the worker sleeps so that the test can
SIGKILL it at exactly that point. On completion it writes OUT_FOLDER/weights.pt (the final state dict,
via torch.save) and OUT_FOLDER/history.json, then prints `done`.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

torch.set_num_threads(1)

from trainkit.callbacks import Checkpoint  # noqa: E402
from trainkit.datasets import load_datasets  # noqa: E402
from trainkit.learner import Callback, Learner  # noqa: E402

EPOCHS, LR, EVERY, SEED = 3, 3e-3, 3, 0


def digits_mlp(seed: int = SEED) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))


class Report(Callback):
    "Print progress after the Checkpoint callback (order 30) has run; block at `hold`."
    order = 100

    def __init__(self, hold: str | None):
        self.hold = hold

    def _say(self, line: str):
        print(line, flush=True)
        if line == self.hold:
            time.sleep(600)  # wait to be killed

    def after_batch(self, learn):
        self._say(f"step {learn.step}")

    def after_epoch(self, learn):
        self._say(f"epoch_end {learn.epoch}")


def main(argv: list[str]) -> None:
    folder, out = Path(argv[0]), Path(argv[1])
    hold = argv[2] if len(argv) > 2 else None
    out.mkdir(parents=True, exist_ok=True)
    digits = load_datasets("digits")
    learn = Learner(digits_mlp(), digits, device="cpu", seed=SEED,
                    callbacks=[Checkpoint(folder, every=EVERY), Report(hold)])
    last = folder / "last.pt"
    print("resume" if last.is_file() else "fresh", flush=True)
    learn.fit(EPOCHS, lr=LR, resume=last if last.is_file() else None)
    torch.save({k: v.detach().clone() for k, v in learn.model.state_dict().items()}, out / "weights.pt")
    (out / "history.json").write_text(json.dumps(learn.history), encoding="utf-8")
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
