"""Build the tabular HPO benchmark: every setting of a 7-dimensional grid trained once with trainkit, per-epoch scores kept.

    python bench/hpo_grid.py [--workers 2] [--epochs 18] [--out bench/results/hpo_grid.csv.gz]

The task is digits (8x8 images, 10 classes) with trainkit's MLP and Learner, where the settings matter: the
validation loss of the grid's settings spans more than an order of magnitude. The dimensions, as in the HPO
literature's tabular benchmarks (LCBench, HPOBench):

  lr            learning rate (peak of the one-cycle schedule), log scale
  weight_decay  log scale (AdamW's decoupled decay; SGD's L2 term)
  width, depth  the MLP's hidden layers
  dropout
  batch_size
  optimizer     "adamw" or "sgd"
  momentum      SGD's momentum: matters only when optimizer == "sgd" (AdamW rows are trained once and the
                table lists them under every momentum value, with the same scores)
  tag           a parameter that does not matter at all: the trainer never sees it (each trained setting is
                listed once per tag value, with the same scores). A search does not know that; a good one
                stops spending trials on it.

Every trained setting uses the same seed (weights, data order). Resumable: finished settings are appended to a
partial CSV beside the output as they finish (one line each), and a rerun skips them; at the end the table is
written compact (4 decimals, gzip) to --out and the partial file removed. bench/tune_speed.py replays searches
against the table; `load_grid` here expands it to every (momentum, tag) combination.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import os
import sys
import time
from pathlib import Path

GRID = {
    "lr": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "weight_decay": [1e-5, 1e-3, 1e-1],
    "width": [32, 128, 512],
    "depth": [1, 2],
    "dropout": [0.0, 0.3],
    "batch_size": [32, 128],
    "optimizer": ["adamw", "sgd"],
}
MOMENTUM = [0.0, 0.9]  # SGD only
TAGS = ["a", "b"]  # does not matter
PARAMS = [*GRID, "momentum"]
OUT = Path(__file__).resolve().parent / "results" / "hpo_grid.csv.gz"


def settings() -> list[dict]:
    "The settings to train: the grid, with momentum for SGD only (AdamW's momentum column is empty)."
    out = []
    for values in itertools.product(*GRID.values()):
        p = dict(zip(GRID, values))
        for m in (MOMENTUM if p["optimizer"] == "sgd" else [None]):
            out.append({**p, "momentum": m})
    return out


def key(p: dict) -> tuple:
    return tuple("" if p[k] is None else str(p[k]) for k in PARAMS)


_DATA = None


def train(p: dict, epochs: int) -> dict:
    "Train one setting with trainkit; its per-epoch validation loss and accuracy."
    global _DATA
    import torch

    from trainkit.datasets import load_datasets
    from trainkit.learner import Learner
    from trainkit.models import MLP
    if _DATA is None:
        torch.set_num_threads(1)
        _DATA = load_datasets("digits")
    torch.manual_seed(0)
    model = MLP(64, 10, (p["width"],) * p["depth"], dropout=p["dropout"])
    opt = "adamw" if p["optimizer"] == "adamw" else (
        lambda params: torch.optim.SGD(params, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"]))
    t = time.perf_counter()
    learn = Learner(model, _DATA, opt=opt, batch_size=p["batch_size"], weight_decay=p["weight_decay"], device="cpu", seed=0)
    learn.fit(epochs, lr=p["lr"])
    row = {k: ("" if p[k] is None else p[k]) for k in PARAMS}
    for h in learn.history:
        row[f"loss{h['epoch'] + 1}"] = round(h["valid_loss"], 4) if h["valid_loss"] == h["valid_loss"] else 99.0
        row[f"acc{h['epoch'] + 1}"] = round(h["accuracy"], 4)
    row["seconds"] = round(time.perf_counter() - t, 2)
    return row


def _work(args):
    return train(*args)


def load_grid(path: str | Path = OUT) -> "pd.DataFrame":
    "The table, expanded: one row per (setting, momentum, tag), AdamW rows repeated for every momentum value."
    import pandas as pd
    t = pd.read_csv(path)
    adam = t[t.optimizer == "adamw"]
    t = pd.concat([t[t.optimizer == "sgd"], *[adam.assign(momentum=m) for m in MOMENTUM]], ignore_index=True)
    t = pd.concat([t.assign(tag=tag) for tag in TAGS], ignore_index=True)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=18)  # successive halving by 3: rungs at 2, 6 and 18 epochs
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--limit", type=int, help="train at most this many new settings (a smoke test)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    partial = out.with_name("." + out.name.removesuffix(".gz") + ".partial")
    cols = [*PARAMS, *[f"{m}{e}" for e in range(1, args.epochs + 1) for m in ("loss", "acc")], "seconds"]
    done = set()
    if partial.exists():
        with open(partial, newline="") as f:
            done = {tuple(r[k] for k in PARAMS) for r in csv.DictReader(f)}
    else:
        with open(partial, "w", newline="") as f:
            csv.DictWriter(f, cols).writeheader()
    todo = [p for p in settings() if key(p) not in done][: args.limit]
    print(f"{len(settings())} settings, {len(done)} done, {len(todo)} to train ({args.workers} workers)", flush=True)
    t0 = time.perf_counter()
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(args.workers) as pool, open(partial, "a", newline="") as f:
        w = csv.DictWriter(f, cols)
        for i, row in enumerate(pool.imap_unordered(_work, [(p, args.epochs) for p in todo]), 1):
            w.writerow(row)
            f.flush()
            if i % 50 == 0 or i == len(todo):
                el = time.perf_counter() - t0
                print(f"{i}/{len(todo)} in {el:.0f} s (eta {el / i * (len(todo) - i):.0f} s)", flush=True)
    with open(partial, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) == len(settings()):
        rows.sort(key=lambda r: [str(r[k]) for k in PARAMS])
        with gzip.open(out, "wt", newline="", compresslevel=9) as g:
            w = csv.DictWriter(g, [c for c in cols if c != "seconds"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        total = sum(float(r["seconds"]) for r in rows)
        print(f"wrote {out} ({out.stat().st_size:,} bytes): {len(rows)} settings, {total / 60:.1f} min of training")
        os.remove(partial)
    return 0


if __name__ == "__main__":
    sys.exit(main())
