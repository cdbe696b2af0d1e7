"""Subprocess entry point for the shared-SQLite-study test in tests/test_tune.py.

    python tune_worker.py DB STUDY_NAME N_TRIALS BARRIER_FOLDER WORKER_ID N_WORKERS

Loads the digits data, writes BARRIER_FOLDER/ready-WORKER_ID, waits until all N_WORKERS ready files
exist (so that the workers create / load the study and run their trials at the same time), then calls
`trainkit.tune.search(..., n_trials=N_TRIALS, epochs=1, storage=f"sqlite:///{DB}", study_name=STUDY_NAME)`
with no retry logic of its own. Prints `done N` (the number of trials the study then holds) and exits 0;
any exception propagates (traceback on stderr, exit code 1).
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)

from trainkit.datasets import load_datasets  # noqa: E402
from trainkit.models import MLP  # noqa: E402
from trainkit.tune import search  # noqa: E402

SPACE = {"lr": ("log", 1e-3, 1e-1), "width": ("int", 4, 16)}


def build(p: dict) -> torch.nn.Module:
    return MLP(64, 10, (p["width"],))


def main(argv: list[str]) -> None:
    db, name, n_trials, barrier, wid, n_workers = argv[0], argv[1], int(argv[2]), Path(argv[3]), argv[4], int(argv[5])
    data = load_datasets("digits")
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"ready-{wid}").touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < n_workers and time.monotonic() < deadline:
        time.sleep(0.01)
    study = search(build, data, SPACE, n_trials=n_trials, epochs=1, storage=f"sqlite:///{db}", study_name=name)
    print(f"done {len(study.trials)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
