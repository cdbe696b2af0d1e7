"""A bounded load test on loopback: 10,000 requests from 50 concurrent clients against `trainkit serve`
in its own process — no errors, and the server's resident memory stops growing once it is warm."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from serving import cli_server, make_registry, wait_ready

TOTAL, CLIENTS = 10_000, 50


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def drive(url: str, rows: list[dict], pid: int) -> dict:
    "TOTAL requests from CLIENTS workers: 80% /predict, 10% batches of 5, 10% invalid (must be 422)."
    stats = {"ok": 0, "errors": [], "rss": []}
    counter = iter(range(TOTAL))
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker():
            for i in counter:
                kind = i % 10
                try:
                    if kind == 8:
                        r = await client.post("/predict/batch", json={"instances": rows[i % 40:i % 40 + 5]})
                        good = r.status_code == 200 and len(r.json()["predictions"]) == 5
                    elif kind == 9:
                        r = await client.post("/predict", json={**rows[i % len(rows)], "island": i})
                        good = r.status_code == 422
                    else:
                        r = await client.post("/predict", json=rows[i % len(rows)])
                        good = r.status_code == 200 and r.json()["prediction"] in ("Adelie", "Chinstrap", "Gentoo")
                except httpx.HTTPError as e:
                    r, good = e, False
                if good:
                    stats["ok"] += 1
                else:
                    stats["errors"].append((i, repr(r)[:200]))
                if i % 1000 == 999:
                    stats["rss"].append((i + 1, rss_mb(pid)))
        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return stats


@pytest.mark.slow
def test_ten_thousand_requests_fifty_clients(tmp_path, penguin_learner):
    reg = make_registry(tmp_path / "registry", penguin_learner)
    columns = [c["name"] for c in reg.manifest("v1")["input"]["columns"]]
    rows = penguin_learner.data.records("test", columns)
    with cli_server("--registry", str(reg.root)) as (url, proc):
        wait_ready(url, proc)
        start = time.perf_counter()
        stats = asyncio.run(drive(url, rows, proc.pid))
        elapsed = time.perf_counter() - start
        assert proc.poll() is None, "the server died under load"
        metrics = httpx.get(url + "/metrics").text
    assert stats["errors"] == [] and stats["ok"] == TOTAL, stats["errors"][:5]
    rss = dict(stats["rss"])
    warm, end = rss[2000], rss[TOTAL]
    print(f"{TOTAL} requests in {elapsed:.1f} s ({TOTAL / elapsed:.0f}/s); server RSS MB: " +
          ", ".join(f"{n}: {v:.1f}" for n, v in stats["rss"]))
    assert end - warm < 10, stats["rss"]  # bounded: no per-request leak (10k requests x 1 KB would be 10 MB)
    assert rss[TOTAL] - rss[6000] < 4, stats["rss"]  # and flat over the last 4,000
    assert 'trainkit_requests_total{endpoint="/predict",method="POST",status="422"} 1000.0' in metrics
