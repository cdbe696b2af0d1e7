"""Tuning speed: Optuna's TPE with median pruning against grid search and random search.

    python bench/tune_speed.py [--trials 24] [--seeds 3] [--json results.json]

The same digits MLP, data, epochs and trial budget for each method; the space is the learning
rate (log scale), width, dropout and weight decay — a 4x3x2x1 grid for grid search, the continuous
ranges spanning it for random search and TPE. Each trial trains with trainkit's Learner and is
scored by its best validation accuracy; studies are kept in memory, so disk writes do not blur the
comparison (trainkit's default, SQLite, adds a few writes per trial). For each method: the time until its best-so-far score is
within 1% of the best grid score (the target), the best score, and how many trials were pruned.
Medians over --seeds runs; the last line gives the ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import optuna

from trainkit.datasets import load_datasets
from trainkit.models import MLP
from trainkit.tune import search

warnings.filterwarnings("ignore")
GRID = {"lr": [1e-4, 1e-3, 1e-2, 1e-1], "width": [16, 64, 256], "dropout": [0.0, 0.25], "weight_decay": [1e-4]}
SPACE = {"lr": ("log", 1e-4, 1e-1), "width": ("int", 16, 256), "dropout": ("float", 0.0, 0.25),
         "weight_decay": ("log", 1e-5, 1e-3)}
GRID_SPACE = {k: ("choice", v) for k, v in GRID.items()}


def build(p):
    return MLP(64, 10, (int(p["width"]),), dropout=float(p["dropout"]))


def run(method, data, trials, epochs, seed):
    "One search; returns [(seconds since start, best-so-far score)] per finished trial, and the study."
    trace, t0 = [], time.perf_counter()

    def record(study, trial):
        done = [t.value for t in study.trials if t.value is not None]
        trace.append((time.perf_counter() - t0, max(done) if done else -math.inf))

    kw = dict(n_trials=trials, epochs=epochs, storage=":memory:", study_name=f"{method}-{seed}",
              load_if_exists=False, seed=seed, callbacks=[record])
    if method == "grid":
        study = search(build, data, GRID_SPACE, pruner="none", sampler=optuna.samplers.GridSampler(GRID, seed=seed), **kw)
    elif method == "random":
        study = search(build, data, SPACE, pruner="none", sampler=optuna.samplers.RandomSampler(seed=seed), **kw)
    else:
        study = search(build, data, SPACE, pruner="median", **kw)
    return trace, study


def time_to(trace, target):
    return next((t for t, best in trace if best >= target), math.inf)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = load_datasets("digits")
    res = {m: {"time": [], "best": [], "pruned": [], "total": []} for m in ("grid", "random", "tpe+pruning")}
    for seed in range(args.seeds):
        traces = {m: run(m, data, args.trials, args.epochs, seed) for m in res}
        target = 0.99 * traces["grid"][0][-1][1]
        for m, (trace, study) in traces.items():
            res[m]["time"].append(time_to(trace, target))
            res[m]["best"].append(trace[-1][1])
            res[m]["total"].append(trace[-1][0])
            res[m]["pruned"].append(sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials))
    print(f"{args.trials} trials x {args.epochs} epochs, digits MLP, {args.seeds} seeds (medians); "
          "target: 99% of the best grid accuracy")
    print(f"\n{'method':12} {'time to target s':>17} {'reached':>8} {'best acc':>9} {'all trials s':>13} {'pruned':>7}")
    med = {}
    for m, r in res.items():
        reached = sum(math.isfinite(t) for t in r["time"])
        med[m] = statistics.median(r["time"])
        print(f"{m:12} {med[m]:17.2f} {reached:>5}/{args.seeds} {statistics.median(r['best']):9.3f} "
              f"{statistics.median(r['total']):13.2f} {statistics.median(r['pruned']):7.0f}")
    key = {"random/tpe time-to-target": round(med["random"] / med["tpe+pruning"], 2),
           "grid/tpe time-to-target": round(med["grid"] / med["tpe+pruning"], 2)}
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": res, "key": key}, indent=1, default=str))
    print("\nkey ratios: " + "; ".join(f"{k} {v}" for k, v in key.items()))


if __name__ == "__main__":
    sys.exit(main())
