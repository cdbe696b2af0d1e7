"""Helpers shared by the service tests: a trained registry, raw test records, a `trainkit serve` subprocess."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import torch

from trainkit.clean import CleanSpec, clean
from trainkit.data import collect
from trainkit.datasets import load_datasets
from trainkit.learner import Learner
from trainkit.models import MLP
from trainkit.prep import split
from trainkit.registry import Registry

SCRIPT = Path(sys.executable).parent / "trainkit"


def train(hidden=(32,), seed=0, epochs=10):
    "A small penguin MLP (the course's model), trained for a few epochs."
    torch.manual_seed(seed)
    data = load_datasets("penguins")
    return Learner(MLP(data.X_train.shape[1], data.n_classes, hidden), data).fit(epochs, lr=1e-2)


def make_registry(root: Path, learner=None, promote: bool = True) -> Registry:
    "A registry holding one version (v1) of the penguin MLP, promoted unless `promote=False`."
    reg = Registry(root)
    version = reg.add(learner if learner is not None else train())
    if promote:
        reg.promote(version)
    return reg


def records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    "Rows as the service takes them: the raw feature fields, missing values as None (JSON null)."
    sub = frame[columns]
    return sub.astype(object).where(sub.notna(), None).to_dict("records")


def test_split() -> pd.DataFrame:
    "The course's test split of the clean penguins (raw columns), as load_datasets made it."
    raw, _ = clean(collect(), CleanSpec.penguins())
    return split(raw, "species", seed=42, groups="individual_id").test


test_split.__test__ = False  # a helper, not a test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0, path: str = "/ready"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} not ready after {timeout} s")


@contextmanager
def cli_server(*args: str, env: dict | None = None, port: int | None = None):
    "`trainkit serve ARGS --port P` in a subprocess; yields (base URL, Popen); SIGTERM at the end."
    port = port or free_port()
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.Popen([str(SCRIPT), "serve", *args, "--port", str(port)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
