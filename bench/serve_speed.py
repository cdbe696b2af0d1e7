"""Serving speed: trainkit's /predict against a FastAPI hello-world under the same server settings.

    python bench/serve_speed.py [--seconds 8] [--rounds 2] [--connections 50] [--json results.json]

Rows, all measured in this one run on this machine:
  hello        GET /hello of a minimal FastAPI app: the ceiling for this server stack
  echo POST    POST /echo of the same app, receiving the /predict body: hello-world plus the request body
  /predict     POST /predict of `trainkit.serve.create_app` with one raw penguin record
  in-process   the same validation + encoding + ONNX Runtime call, no HTTP: the floor
  with --ablation, /predict again without dynamic batching, and without gc.freeze()
  ort b1 / torch b1   the penguin MLP at batch 1, ONNX Runtime against eager torch (one thread each)

Both servers run the same way: uvicorn, one worker process, uvloop + httptools when installed,
access log off, pinned with `taskset` to CPU 0. The load generator is wrk (C, one thread,
--connections keep-alive connections), pinned to CPU 1, so it never competes with the server for
its core: `apt-get install wrk` if it is missing. Rounds alternate hello and /predict; the table
reports the median round. Targets (issue 5): /predict >= 0.8x hello's requests/s, /predict's p99
<= 1.5x hello's, ORT >= 2x eager torch at batch 1.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_registry(root: Path) -> tuple[Path, dict]:
    "Train the course's penguin MLP briefly, add it to a registry, promote it; return the registry and a raw record."
    from trainkit.export import penguin_learner
    from trainkit.registry import Registry

    reg = Registry(root / "registry")
    reg.promote(reg.add(penguin_learner(epochs=10)))
    record = {"culmen_length_mm": 38.6, "culmen_depth_mm": 21.2, "flipper_length_mm": 191.0, "body_mass_g": 3800.0,
              "delta_15n": 8.7, "delta_13c": -25.6, "island": "Torgersen", "clutch_completion": "Yes", "sex": "male"}
    return reg.root, record


def run_server(kind: str, port: int, registry: str):
    "The server side (a subprocess): uvicorn with identical settings for both apps."
    import uvicorn

    if kind in ("hello", "echo"):
        from fastapi import FastAPI, Request

        app = FastAPI()

        @app.get("/hello")
        async def hello():
            return {"message": "hello"}

        @app.post("/echo")
        async def echo(request: Request):  # hello-world that also receives the /predict body
            return {"bytes": len(await request.body())}
    else:  # predict: as `trainkit serve` runs it; the ablations switch one of its two speed-ups off
        from trainkit.serve import create_app
        app = create_app(registry=registry, freeze_gc=kind != "predict-nofreeze", batching=kind != "predict-nobatch")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_ready(url: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not become ready")


def parse_wrk(out: str) -> dict:
    def seconds(v: str, unit: str) -> float:
        return float(v) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    lat = {int(p): seconds(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "p50": lat[50], "p99": lat[99], "non_2xx": int(non2xx[1]) if non2xx else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def load(kind: str, args, registry: Path, record: dict, pin: bool) -> dict:
    port = free_port()
    taskset = ["taskset", "-c", "0"] if pin else []
    server = subprocess.Popen([*taskset, sys.executable, str(HERE), "--server", kind, "--port", str(port),
                               "--registry", str(registry)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        predict = kind.startswith("predict")
        wait_ready(f"{base}/ready" if predict else f"{base}/hello")
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            if predict or kind == "echo":
                body = json.dumps(record).replace("\\", "\\\\").replace('"', '\\"')
                f.write(f'wrk.method = "POST"\nwrk.body = "{body}"\nwrk.headers["Content-Type"] = "application/json"\n')
        url = f"{base}/{'predict' if predict else kind}"
        wrk = ["taskset", "-c", "1"] if pin else []
        wrk += ["wrk", "-t1", f"-c{args.connections}", "-d2s", "--latency", "-s", f.name, url]
        subprocess.run(wrk, capture_output=True, text=True, check=True)  # warm-up
        wrk[wrk.index("-d2s")] = f"-d{args.seconds}s"
        out = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
        os.unlink(f.name)
        return parse_wrk(out)
    finally:
        server.terminate()
        server.wait(10)


def in_process(registry: Path, record: dict, n: int = 20000) -> dict:
    "Validation + encoding + ONNX Runtime for one record, no HTTP; and ORT vs eager torch at batch 1."
    import numpy as np
    import torch

    from trainkit.registry import Registry
    from trainkit.predictor import load_served

    served = load_served(Registry(registry).load())
    body = json.dumps(record).encode()

    def timed(fn, reps):
        for _ in range(min(500, reps)):
            fn()
        t = np.empty(reps)
        for i in range(reps):
            t0 = time.perf_counter()
            fn()
            t[i] = time.perf_counter() - t0
        return t

    path = timed(lambda: served.predict([served.record.model_validate_json(body).model_dump(by_alias=True)]), n)
    x = served.encoder([served.record.model_validate_json(body).model_dump(by_alias=True)])
    sess = served.session
    ort_t = timed(lambda: sess.run(None, {"input": x}), n)
    torch.set_num_threads(1)
    model, xt = served.bundle.model, torch.from_numpy(x)
    with torch.inference_mode():
        torch_t = timed(lambda: model(xt), n)
    med = lambda t: float(np.median(t))
    return {"in_process": {"rps": 1 / float(np.mean(path)), "p50": med(path), "p99": float(np.quantile(path, 0.99))},
            "ort_b1": med(ort_t), "torch_b1": med(torch_t)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8, help="wrk duration per round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating hello / predict rounds")
    ap.add_argument("--connections", type=int, default=50, help="concurrent keep-alive connections")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--ablation", action="store_true",
                    help="also measure /predict without dynamic batching and without gc.freeze()")
    ap.add_argument("--server", choices=["hello", "echo", "predict", "predict-nobatch", "predict-nofreeze"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--registry", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        return run_server(args.server, args.port, args.registry)
    if not shutil.which("wrk"):
        sys.exit("serve_speed: wrk is not installed (Debian: apt-get install wrk).")
    pin = bool(shutil.which("taskset")) and len(os.sched_getaffinity(0)) >= 2
    from trainkit.core import environment
    with tempfile.TemporaryDirectory() as tmp:
        registry, record = make_registry(Path(tmp))
        kinds = ["hello", "echo", "predict"] + (["predict-nobatch", "predict-nofreeze"] if args.ablation else [])
        rounds = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for kind in kinds:
                rounds[kind].append(load(kind, args, registry, record, pin))
        local = in_process(registry, record)
    pick = lambda rs: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]  # the median round by throughput
    hello, echo, predict = pick(rounds["hello"]), pick(rounds["echo"]), pick(rounds["predict"])
    ratio_rps, ratio_p99 = predict["rps"] / hello["rps"], predict["p99"] / hello["p99"]
    ort_speedup = local["torch_b1"] / local["ort_b1"]
    rows = [("hello (ceiling)", hello), ("echo POST", echo), ("/predict", predict)]
    if args.ablation:
        rows += [("  no dyn. batching", pick(rounds["predict-nobatch"])), ("  no gc.freeze", pick(rounds["predict-nofreeze"]))]
    rows.append(("in-process (floor)", local["in_process"]))
    print(f"serve_speed: wrk -t1 -c{args.connections} -d{args.seconds}s x {args.rounds} rounds, server on CPU 0, "
          f"wrk on CPU 1{'' if pin else ' (NOT pinned: taskset or a second core missing)'}")
    print(f"{'row':<20}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, r in rows:
        err = r.get("non_2xx", 0) + r.get("socket_errors", 0)
        print(f"{name:<20}{r['rps']:>12.0f}{r['p50'] * 1e3:>10.3f}{r['p99'] * 1e3:>10.3f}{err:>8}")
    print(f"/predict vs hello: {ratio_rps:.2f}x requests/s (target >= 0.8), {ratio_p99:.2f}x p99 (target <= 1.5)")
    print(f"/predict vs echo POST (hello-world that also receives the same body): {predict['rps'] / echo['rps']:.2f}x requests/s, "
          f"{predict['p99'] / echo['p99']:.2f}x p99")
    print(f"batch 1: ONNX Runtime {local['ort_b1'] * 1e6:.1f} us, eager torch {local['torch_b1'] * 1e6:.1f} us "
          f"-> ORT {ort_speedup:.2f}x faster (target >= 2)")
    result = {"hello": hello, "echo": echo, "predict": predict, "rounds": rounds, **local, "ratio_rps": ratio_rps, "ratio_p99": ratio_p99,
              "ort_speedup_b1": ort_speedup, "connections": args.connections, "seconds": args.seconds, "pinned": pin,
              "environment": environment()}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
