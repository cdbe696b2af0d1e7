"""Where the time goes on a GPU: the eager Learner against the plain on-device loop, and CUDA-graph mode's set-up.

    python bench/gpu_profile.py [--out DIR]

1. One steady-state epoch of the digits CNN (and MLP), batch 64, profiled with torch.profiler for the plain
   on-device loop of bench/train_speed.py and for the Learner: CPU time per step, CUDA kernel launches per step,
   and the operators that differ most in self CPU time (the table that says what the Learner does that the
   plain loop does not).
2. CUDA-graph mode's whole fit taken apart: Learner construction, the runner's set-up (learning-rate table,
   warm-up and capture), each epoch's replay and each validation pass, synchronised and timed.
Needs CUDA; prints a line and exits 0 without it.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import Stamps, learner, make_model, plain_on_device  # noqa: E402

from trainkit.datasets import load_datasets  # noqa: E402
from trainkit.learner import Callback, Learner  # noqa: E402


def profile_epoch(fn, ds, kind, dev):
    "Profile the second of two epochs of `fn`; (events by name, kernel launches, CPU seconds of that epoch)."
    from torch.profiler import ProfilerActivity, profile

    fn(ds, kind, 1, dev, [])  # warm-up
    marks = []

    class Mark(list):
        "A stamps list that starts and stops the profiler at the second epoch's boundaries."
        def append(self, t):
            super().append(t)
            if len(self) == 2:
                prof.__enter__()
                marks.append(time.perf_counter())
            elif len(self) == 3:
                torch.cuda.synchronize()
                marks.append(time.perf_counter())
                prof.__exit__(None, None, None)

    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    fn(ds, kind, 3, dev, Mark())
    ev = collections.defaultdict(lambda: [0, 0.0])
    launches = 0
    for e in prof.key_averages():
        ev[e.key][0] += e.count
        ev[e.key][1] += e.self_cpu_time_total / 1e6
        if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"):
            launches += e.count
    return ev, launches, marks[1] - marks[0]


def graph_breakdown(ds, kind, dev, epochs=20):
    "Seconds of each part of a CUDA-graph fit, synchronised."
    t = {}

    class Timer(Callback):
        def __init__(self): self.val, self.rep = [], []
        def before_epoch(self, learn): torch.cuda.synchronize(); self.t0 = time.perf_counter()
        def after_epoch(self, learn): torch.cuda.synchronize(); self.val.append(time.perf_counter() - self.t1)
        def after_batch(self, learn): torch.cuda.synchronize(); self.t1 = time.perf_counter(); self.rep.append(self.t1 - self.t0)

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    timer = Timer()
    learn = Learner(make_model(kind), ds, batch_size=64, device=dev, cuda_graph=True, callbacks=[timer])
    torch.cuda.synchronize()
    t["construct"] = time.perf_counter() - t0
    import trainkit.graphs as graphs
    real = graphs.CudaGraphRunner.__init__
    def timed(self, *a, **k):
        torch.cuda.synchronize(); s = time.perf_counter()
        real(self, *a, **k)
        torch.cuda.synchronize(); t["runner set-up (lr table, warm-up, capture)"] = time.perf_counter() - s
    graphs.CudaGraphRunner.__init__ = timed
    try:
        s = time.perf_counter()
        learn.fit(epochs, lr=3e-3)
        torch.cuda.synchronize()
        t["fit"] = time.perf_counter() - s
    finally:
        graphs.CudaGraphRunner.__init__ = real
    s = time.perf_counter()
    learn.lr_table()
    t["lr table alone"] = time.perf_counter() - s
    t["replays (sum)"] = sum(timer.rep)
    t["validation (sum)"] = sum(timer.val)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA here: nothing to profile")
        return 0
    dev = torch.device("cuda")
    ds = load_datasets("digits")
    steps = (len(ds.X_train) + 63) // 64
    lines = [f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}; digits, batch 64, {steps} steps per epoch"]
    for kind in ("cnn", "mlp"):
        res = {name: profile_epoch(fn, ds, kind, dev) for name, fn in (("on-device", plain_on_device), ("learner", learner))}
        lines.append(f"\n== {kind}: one steady-state epoch, profiled (profiler overhead included in both)")
        for name, (ev, launches, sec) in res.items():
            lines.append(f"{name:10} {sec / steps * 1e6:8.1f} us/step   kernel launches/step {launches / steps:6.1f}")
        a, b = res["on-device"][0], res["learner"][0]
        diff = sorted(set(a) | set(b), key=lambda k: -(b.get(k, [0, 0.0])[1] - a.get(k, [0, 0.0])[1]))
        lines.append(f"{'operator':44} {'calls plain':>11} {'calls learner':>13} {'self CPU ms plain':>17} {'learner':>9}")
        for k in diff[:15] + diff[-5:]:
            pa, pb = a.get(k, [0, 0.0]), b.get(k, [0, 0.0])
            lines.append(f"{k[:44]:44} {pa[0]:11d} {pb[0]:13d} {pa[1] * 1e3:17.2f} {pb[1] * 1e3:9.2f}")
    for kind in ("mlp", "cnn"):
        for _ in range(2):  # the first fit also warms up cuDNN and the allocator; report the second
            t = graph_breakdown(ds, kind, dev)
        lines.append(f"\n== {kind}: a 20-epoch CUDA-graph fit, taken apart (seconds)")
        lines += [f"  {k:44} {v:8.4f}" for k, v in t.items()]
        s = time.perf_counter()
        plain_on_device(ds, kind, 20, dev, [])
        torch.cuda.synchronize()
        lines.append(f"  {'plain on-device loop, whole fit':44} {time.perf_counter() - s:8.4f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
