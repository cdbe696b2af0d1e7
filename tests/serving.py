"""Helpers shared by the service tests: a registry holding the shared penguin model, raw records, a second model
to promote, a request built by hand for the Service's methods, and a `trainkit serve` subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
from starlette.requests import Request

from conftest import free_port
from trainkit.export import penguin_learner
from trainkit.registry import Registry

SCRIPT = Path(sys.executable).parent / "trainkit"


def make_registry(root: Path, learner, promote: bool = True) -> Registry:
    "A registry holding one version (v1) of `learner` (the shared penguin MLP), promoted unless `promote=False`."
    reg = Registry(root)
    version = reg.add(learner)
    if promote:
        reg.promote(version)
    return reg


def another_model(learner, hidden=(16,), seed: int = 1, epochs: int = 10):
    "A different penguin MLP on the shared learner's data: a second version to promote (or to break)."
    return penguin_learner(hidden=hidden, seed=seed, epochs=epochs, data=learner.data)


def records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    "Rows as the service takes them: the raw feature fields, missing values as None (JSON null)."
    sub = frame[columns]
    return sub.astype(object).where(sub.notna(), None).to_dict("records")


def request(body: bytes | list[bytes] = b"", headers: dict | None = None, path: str = "/predict",
            disconnect: bool = False) -> tuple[Request, list]:
    """A POST as uvicorn hands it to the app: `headers`, then `body` (one piece, or a list of chunks; with `disconnect`,
    the client goes away after the last one). Returns the Request and a list that records each chunk as it is read."""
    chunks = body if isinstance(body, list) else [body]
    read = []

    async def receive():
        if len(read) < len(chunks):
            read.append(chunks[len(read)])
            return {"type": "http.request", "body": read[-1], "more_body": len(read) < len(chunks) or disconnect}
        return {"type": "http.disconnect"}
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": path, "headers": raw}, receive), read


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
