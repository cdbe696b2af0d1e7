"""The serving image, built and run here: `docker build` on a base image made from Debian's packages
(tools/build-base-image.sh; no image registry is reachable), a model registry mounted from this machine, /ping,
/invocations and /predict checked against the notebook model's predictions, and a promotion on this machine that the
running container picks up without a restart. Every container uses the host network; test traffic goes to 127.0.0.1.

Needs a running Docker engine (root). CI starts one (tools/install-services.sh) and sets TRAINKIT_CONTAINER_REQUIRED,
so there a missing engine fails instead of skipping."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import free_port
from trainkit.registry import Registry

pytestmark = pytest.mark.container
ROOT = Path(__file__).resolve().parents[1]
BASE, TAG = "trainkit-base:bookworm", "trainkit:test"


def _engine() -> str | None:
    "Why containers cannot run here, or None when a Docker engine answers."
    if shutil.which("docker") is None:
        return "no docker command"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else f"no Docker engine: {r.stderr.strip()[:200]}"


@pytest.fixture(scope="module")
def image():
    "The runtime image (no registry baked in), built from this checkout; its size is printed."
    why = _engine()
    if why:
        if os.environ.get("TRAINKIT_CONTAINER_REQUIRED"):
            pytest.fail(f"container tests are required here, but: {why}")
        pytest.skip(why)
    subprocess.run(["bash", str(ROOT / "tools" / "build-base-image.sh"), BASE], check=True, timeout=900)
    t = time.perf_counter()
    r = subprocess.run(["docker", "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={BASE}",
                        "--target", "runtime", "-t", TAG, str(ROOT)], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    size = int(subprocess.run(["docker", "image", "inspect", TAG, "--format", "{{.Size}}"],
                              capture_output=True, text=True, check=True).stdout)
    print(f"\nimage {TAG}: {size / 1e6:.0f} MB, built in {time.perf_counter() - t:.0f} s")
    return TAG


def _ready(url: str, container: str, version: str | None = None, timeout: float = 90) -> dict:
    "Wait for /ping to answer 200 (and name `version`, if given); its JSON."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/ping", timeout=2)
            if r.status_code == 200 and (version is None or r.json()["version"] == version):
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr[-3000:]
    raise AssertionError(f"the container never answered /ping{' with ' + version if version else ''}:\n{logs}")


def test_image_serves_a_mounted_registry_and_follows_a_promotion(image, penguin_learner, penguin_bundle, tmp_path):
    reg = Registry(tmp_path / "registry")
    reg.promote(reg.add(penguin_bundle.path))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run = subprocess.run(["docker", "run", "-d", "--rm", "--network", "host", "-e", f"PORT={port}",
                          "-v", f"{reg.root}:/models:ro", image], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    container = run.stdout.strip()
    try:
        assert _ready(url, container) == {"status": "ready", "version": "v1"}
        data = penguin_learner.data
        rows = data.records("test")
        # SageMaker's route, the whole test split: the notebook model's probabilities to 1e-5
        r = httpx.post(f"{url}/invocations", json={"instances": rows}, timeout=30)
        assert r.status_code == 200, r.text
        p_http = np.array([[p["probabilities"][c] for c in data.classes] for p in r.json()["predictions"]])
        np.testing.assert_allclose(p_http, penguin_learner.predict(data.X_test).numpy(), atol=1e-5)
        one = httpx.post(f"{url}/predict", json=rows[0], timeout=10).json()
        assert one["version"] == "v1" and one["prediction"] == data.classes[int(p_http[0].argmax())]
        assert httpx.post(f"{url}/predict", json={**rows[0], "island": "Atlantis"}, timeout=10).status_code == 422
        # inside: the service's user, and no PyTorch anywhere
        uid = subprocess.run(["docker", "exec", container, "id", "-u"], capture_output=True, text=True).stdout.strip()
        assert uid == "10001"
        assert subprocess.run(["docker", "exec", container, "python", "-c", "import torch"],
                              capture_output=True).returncode != 0
        # a new version promoted on this machine: the container follows CURRENT, without a restart
        reg.promote(reg.add(penguin_bundle.path))
        assert _ready(url, container, version="v2", timeout=30)["version"] == "v2"
        assert httpx.post(f"{url}/predict", json=rows[0], timeout=10).json()["version"] == "v2"
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)
