"""Differential privacy's accuracy cost in FedAvg, over 5 seeds: the run Step 9's notebook makes with one seed.

    python bench/09_federated.py [--seeds 5] [--rounds 50] [--json bench/results/09_federated.json]

Ten clients of the digits training split, two classes each (label_skew_split); an MLP(64, 10, (64,));
FedAvg with one local epoch, expected batch 25, SGD at lr 0.3, for --rounds rounds. Three runs per seed:
  no privacy      plain local SGD (shuffled batches of 25)
  clipping only   DP-SGD's Poisson batches and per-example clipping to norm 1, no noise
  DP, eps <= 8    the same plus Gaussian noise at the noise multiplier that gives eps <= 8 at delta = 1e-3
                  for the smallest client (rdp_epsilon, checked against Opacus's RDPAccountant in the tests)
Writes each run's test accuracy per seed, the noise multiplier, eps, and the machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from trainkit.core import atomic_write, seed_everything
from trainkit.datasets import load_datasets
from trainkit.federated import accuracy, dp_steps, federate, label_skew_split, noise_for_epsilon, rdp_epsilon
from trainkit.models import MLP

BUDGET, DELTA, BATCH, LR, CLIP = 8.0, 1e-3, 25, 0.3, 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "09_federated.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    digits = load_datasets("digits")
    X, y = digits.X_train, digits.y_train
    valid, test = (digits.X_valid, digits.y_valid), (digits.X_test, digits.y_test)
    splits = {seed: label_skew_split(y, 10, 2, seed=seed) for seed in range(args.seeds)}
    rows = min(len(r) for parts in splits.values() for r in parts)
    q, steps = dp_steps(rows, BATCH, epochs=1, rounds=args.rounds)
    sigma = noise_for_epsilon(BUDGET, q, steps, DELTA)
    runs = {"no privacy": {}, "clipping only": {"clip": CLIP}, f"DP, ε ≤ {BUDGET:g}": {"clip": CLIP, "noise": sigma}}
    table, start = {name: {} for name in runs}, time.perf_counter()
    for seed, parts in splits.items():
        clients = [(X[r], y[r]) for r in parts]
        for name, kw in runs.items():
            seed_everything(seed)
            model = MLP(64, 10, (64,))
            federate(model, clients, args.rounds, valid, epochs=1, batch_size=BATCH, lr=LR, seed=seed, device="cpu", **kw)
            table[name][seed] = accuracy(model, *test)
            print(f"seed {seed} {name}: test accuracy {table[name][seed]:.3f}", flush=True)
    out = {"seeds": args.seeds, "rounds": args.rounds, "noise": sigma, "epsilon": rdp_epsilon(sigma, q, steps, DELTA),
           "delta": DELTA, "sample_rate": q, "steps": steps, "batch_size": BATCH, "lr": LR, "clip": CLIP,
           "test_accuracy": table, "seconds": round(time.perf_counter() - start),
           "machine": f"{platform.processor() or platform.machine()}, 1 CPU thread, torch {torch.__version__}"}
    with atomic_write(args.json) as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
