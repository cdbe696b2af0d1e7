"""A real Prometheus (Debian's package) scrapes the running service on loopback with the shipped scrape
config's job and the shipped alert rules: the target is up, the service's series arrive, the drift alarm
reaches Prometheus, and every shipped rule loads and evaluates."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from serving import make_registry, records
from trainkit.serve import background, create_app

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = shutil.which("prometheus")


def needs_prometheus():
    if PROMETHEUS:
        return
    if os.environ.get("CI"):
        pytest.fail("prometheus is not installed; tools/install-services.sh installs Debian's package in CI")
    pytest.skip("prometheus is not installed (Debian: apt-get install prometheus; tools/install-services.sh)")


def query(base: str, q: str) -> list:
    r = httpx.get(f"{base}/api/v1/query", params={"query": q}, timeout=5).json()
    assert r["status"] == "success", r
    return r["data"]["result"]


def wait_for(fn, timeout: float = 40.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := fn():
                return value
        except (httpx.HTTPError, ValueError):  # not listening yet, or "Service Unavailable" while it starts
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_prometheus_scrapes_the_service(tmp_path, penguin_learner):
    needs_prometheus()
    reg = make_registry(tmp_path / "registry", penguin_learner)
    columns = [c["name"] for c in reg.manifest("v1")["input"]["columns"]]
    heavy = penguin_learner.data.rows("test").sample(150, replace=True, random_state=0).assign(body_mass_g=lambda d: d.body_mass_g + 700)
    with background(create_app(reg)) as url:
        shipped = (ROOT / "deploy" / "prometheus.yml").read_text()
        target = url.removeprefix("http://")
        config = tmp_path / "prometheus.yml"  # the shipped file, pointed at this test's port, scraping every second
        config.write_text(shipped.replace("127.0.0.1:8000", target).replace("scrape_interval: 5s", "scrape_interval: 1s")
                          .replace("scrape_timeout: 4s", "scrape_timeout: 1s").replace("evaluation_interval: 15s", "evaluation_interval: 1s")
                          .replace("- prometheus-rules.yml", f"- {ROOT / 'deploy' / 'prometheus-rules.yml'}"))
        port = free_port()
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: query(base, 'up{job="trainkit"} == 1'), what="the trainkit target to be up")
            assert httpx.post(url + "/predict/batch", json={"instances": records(heavy, columns)}).status_code == 200
            assert httpx.post(url + "/predict", json={}).status_code == 422
            predicted = wait_for(lambda: query(base, "sum(trainkit_predictions_total)"), what="predictions")
            assert float(predicted[0]["value"][1]) == 150
            wait_for(lambda: query(base, "trainkit_drift_alarm == 1"), what="the drift alarm")
            errors = wait_for(lambda: query(base, 'trainkit_errors_total{kind="validation"}'), what="validation errors")
            assert errors[0]["metric"]["endpoint"] == "/predict"
            info = query(base, "trainkit_model_info")
            assert [(s["metric"]["version"], s["value"][1]) for s in info] == [("v1", "1")]
            rules = httpx.get(f"{base}/api/v1/rules").json()["data"]["groups"]
            loaded = [r for g in rules for r in g["rules"]]
            assert len(loaded) >= 5 and all(r["health"] == "ok" for r in loaded), loaded
            assert wait_for(lambda: any(r["name"] == "TrainkitDriftAlarm" and r["state"] in ("pending", "firing")
                                        for g in httpx.get(f"{base}/api/v1/rules").json()["data"]["groups"]
                                        for r in g["rules"]), what="the drift alert to become pending")
        finally:
            prom.terminate()
            prom.wait(15)
