"""Tuning speed as HPO research measures it: searches replayed against a trained grid, over many seeds.

    python bench/tune_speed.py [--seeds 50] [--budget 300] [--live 3] [--json results.json]

The grid is bench/hpo_grid.py's table (digits MLP trained with trainkit for 18 epochs at every setting of 7
dimensions plus a conditional one and one that does not matter; results/hpo_grid.csv.gz). A search proposes
settings from the space a user would write for `trainkit.tune.search` (continuous ranges, snapped to the nearest
grid value); the table answers with that setting's per-epoch validation loss, so a search of hundreds of trials
costs milliseconds and the comparison can use 50 seeds. Each trial's score is its best validation loss (what
`search(metric="loss")` returns); a trial that a pruner stops has run only the epochs it reported.

The target: a setting in the grid's top 1% by that score. For each method and seed we count the trials, and the
epochs of training, until the search first completes a trial on such a setting (a pruned trial does not count as
finding it). Methods:

  random           Optuna's RandomSampler, no pruning: the baseline
  tpe (before)     search's defaults before this benchmark existed: Optuna 5's TPE (multivariate) with a quarter
                   of the trials (3 to 10) as random start-up, no pruning
  tpe+prune before the same with the pruner search used then: MedianPruner(5 start-up trials, 2 warm-up epochs)
  tpe (defaults)   trainkit.tune.search's default sampler now (`default_sampler`), no pruning
  tpe + pruning    the same, with search's default pruner now (`make_pruner("percentile")`: the worst tenth stops)
  halving          scikit-learn's HalvingRandomSearchCV (81 candidates, factor 3: 81 settings for 2 epochs, the best
                   27 for 6, the best 9 for 18; each rung trained from scratch, as scikit-learn does); its trials are
                   the candidates it has evaluated when a top-1% setting first completes 18 epochs

Medians over seeds, the share of seeds each method needs fewer trials than random search in the same seed, and the
ratios the targets name: tpe's median trials / random's (<= 0.5, winning >= 70% of seeds), tpe + pruning's median
epochs / random's (<= 1/3). --live N repeats tpe + pruning with real training (trainkit.tune.search on digits, the
same space, snapped to the grid) for N seeds: its trials to the target confirm the replay.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hpo_grid import GRID, MOMENTUM, PARAMS, TAGS, load_grid  # noqa: E402

from trainkit.tune import default_sampler, make_pruner, search, suggest  # noqa: E402

PRUNER = inspect.signature(search).parameters["pruner"].default  # the pruner search uses by default

warnings.filterwarnings("ignore")
EPOCHS = 18
# What a user would write for trainkit.tune.search: ranges, not the grid.
SPACE = {"lr": ("log", 3e-4, 3e-1), "weight_decay": ("log", 1e-5, 1e-1), "width": ("int", 32, 512),
         "depth": ("int", 1, 2), "dropout": ("float", 0.0, 0.3), "batch_size": ("choice", [32, 128]),
         "optimizer": ("choice", ["adamw", "sgd"]), "momentum": ("float", 0.0, 0.9), "tag": ("choice", TAGS)}
VALUES = {**GRID, "momentum": MOMENTUM, "tag": TAGS}
LOG = {"lr", "weight_decay", "width"}


def snap(params: dict) -> dict:
    "The grid setting nearest to `params` (log distance for rates and widths)."
    out = {}
    for k, grid in VALUES.items():
        v = params[k]
        if isinstance(grid[0], str):
            out[k] = v
        else:
            d = [abs(math.log(v) - math.log(g)) if k in LOG else abs(v - g) for g in grid]
            out[k] = grid[int(np.argmin(d))]
    return out


class Table:
    "The expanded grid: per-epoch validation losses by setting, each setting's score, and the top 1%."

    def __init__(self, path=None):
        t = load_grid(path) if path else load_grid()
        self.keys = [self.key(r) for r in t[PARAMS + ["tag"]].to_dict("records")]
        self.curves = t[[f"loss{e}" for e in range(1, EPOCHS + 1)]].to_numpy()
        self.score = self.curves.min(1)
        self.by_key = dict(zip(self.keys, range(len(self.keys))))
        cut = np.sort(self.score)[max(1, int(round(0.01 * len(self.score)))) - 1]
        self.threshold = float(cut)
        self.top = {k for k, s in zip(self.keys, self.score) if s <= cut}

    @staticmethod
    def key(p: dict) -> tuple:
        m = "" if p["optimizer"] == "adamw" else p["momentum"]  # momentum does not change an AdamW run
        return (float(p["lr"]), float(p["weight_decay"]), int(p["width"]), int(p["depth"]), float(p["dropout"]),
                int(p["batch_size"]), p["optimizer"], "" if m == "" or m != m else float(m), p["tag"])

    def curve(self, p: dict) -> np.ndarray:
        return self.curves[self.by_key[self.key(p)]]


def replay(table: Table, sampler, pruner, seed: int, budget: int) -> tuple[float, float]:
    "An Optuna search against the table (ask and tell, as study.optimize would run it): trials and epochs to the top 1%."
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    epochs = 0
    for n in range(1, budget + 1):
        trial = study.ask()
        p = snap(suggest(trial, SPACE))
        curve = table.curve(p)
        pruned = False
        for e, loss in enumerate(curve):
            trial.report(float(loss), e)
            if trial.should_prune():
                pruned, epochs = True, epochs + e + 1
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        epochs += len(curve)
        study.tell(trial, float(curve.min()))
        if table.key(p) in table.top:
            return n, epochs
    return math.inf, epochs


def replay_halving(table: Table, seed: int) -> tuple[float, float]:
    "scikit-learn's HalvingRandomSearchCV against the table: trials (candidates evaluated) and epochs to the top 1%."
    from sklearn.base import BaseEstimator
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV

    log = []

    class FromTable(BaseEstimator):
        def __init__(self, lr=1e-3, weight_decay=1e-5, width=32, depth=1, dropout=0.0, batch_size=32,
                     optimizer="adamw", momentum=0.0, tag="a", n_epochs=EPOCHS):
            self.lr, self.weight_decay, self.width, self.depth, self.dropout = lr, weight_decay, width, depth, dropout
            self.batch_size, self.optimizer, self.momentum, self.tag, self.n_epochs = batch_size, optimizer, momentum, tag, n_epochs

        def fit(self, X, y):
            p = self.get_params()
            self.loss_ = float(table.curve(p)[: self.n_epochs].min())
            log.append((table.key(p), self.n_epochs))
            return self

        def score(self, X, y):
            return -self.loss_

    X, y = np.zeros((20, 1)), np.arange(20) % 2
    cv = [(np.arange(10), np.arange(10, 20))]  # one split: the table already holds validation scores
    search = HalvingRandomSearchCV(FromTable(), {k: v for k, v in VALUES.items()}, factor=3, resource="n_epochs",
                                   min_resources=2, max_resources=EPOCHS, cv=cv, random_state=seed, refit=False,
                                   n_candidates=81)  # rungs: 81 settings x 2 epochs, 27 x 6, 9 x 18
    search.fit(X, y)
    seen, epochs = set(), 0
    for k, r in log:
        seen.add(k)
        epochs += r
        if r == EPOCHS and k in table.top:
            return len(seen), epochs
    return math.inf, epochs


def live(table: Table, seed: int, budget: int) -> tuple[float, float, float]:
    "tpe + pruning with real training (trainkit.tune.search on digits): trials, epochs and seconds to the top 1%."
    import torch
    from trainkit.datasets import load_datasets
    from trainkit.models import MLP
    data, found, epochs = load_datasets("digits"), [], [0]
    torch.set_num_threads(1)  # as the grid was trained, so a snapped setting reproduces its table row

    def build(p):
        p.update(snap(p))  # the Learner then trains the grid setting itself (lr, batch size, optimizer, ...)
        return MLP(64, 10, (p["width"],) * p["depth"], dropout=p["dropout"])

    def stop(study, trial):
        epochs[0] += len(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.COMPLETE and table.key(snap(trial.params)) in table.top:
            found.append(len(study.trials))
            study.stop()

    t = time.perf_counter()
    search(build, data, SPACE, n_trials=budget, metric="loss", epochs=EPOCHS, storage=":memory:", seed=seed,
           study_name=f"live-{seed}", load_if_exists=False, callbacks=[stop])
    return (found[0] if found else math.inf), epochs[0], time.perf_counter() - t


def summary(runs: dict, base: str = "random") -> list[str]:
    def med(v): return statistics.median(v)
    def q(v, f):  # a quantile, "-" when it falls among the searches that never found the top 1%
        x = float(np.quantile([x if x != math.inf else 1e9 for x in v], f))
        return "-" if x >= 1e9 else f"{x:.0f}"
    lines = [f"{'method':16} {'median trials':>13} {'IQR (trials)':>14} {'median epochs':>13} {'reached':>8} {'beats random':>12}"]
    for m, r in runs.items():
        wins = sum(a < b for a, b in zip(r["trials"], runs[base]["trials"]))
        beats = "" if m == base else f"{wins / len(r['trials']):.0%}"
        lines.append(f"{m:16} {med(r['trials']):13.1f} {q(r['trials'], .25):>5} to {q(r['trials'], .75):<5} "
                     f"{med(r['epochs']):13.0f} {sum(t != math.inf for t in r['trials']):5d}/{len(r['trials']):<2d} "
                     f"{beats:>12}")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--budget", type=int, default=300, help="most trials a replayed search may run")
    ap.add_argument("--live", type=int, default=0, help="seeds of tpe + pruning with real training")
    ap.add_argument("--live-budget", type=int, default=120)
    ap.add_argument("--grid", help="the table (default bench/results/hpo_grid.csv.gz)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = Table(args.grid)
    n = len(table.keys)
    print(f"grid: {n} settings ({len(set(table.keys))} distinct keys), top 1% = {len(table.top)} settings with best "
          f"validation loss <= {table.threshold:.4f} (median {np.median(table.score):.3f}, worst {table.score.max():.3f})")
    before = lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=max(3, min(10, args.budget // 4)))
    methods = {
        "random": lambda s: replay(table, optuna.samplers.RandomSampler(seed=s), optuna.pruners.NopPruner(), s, args.budget),
        "tpe (before)": lambda s: replay(table, before(s), optuna.pruners.NopPruner(), s, args.budget),
        "tpe+prune before": lambda s: replay(table, before(s), optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
                                             s, args.budget),
        "tpe (defaults)": lambda s: replay(table, default_sampler(args.budget, s), optuna.pruners.NopPruner(), s, args.budget),
        "tpe + pruning": lambda s: replay(table, default_sampler(args.budget, s), make_pruner(PRUNER), s, args.budget),
        "halving": lambda s: replay_halving(table, s),
    }
    runs = {m: {"trials": [], "epochs": []} for m in methods}
    t0 = time.perf_counter()
    for s in range(args.seeds):
        for m, fn in methods.items():
            trials, epochs = fn(s)
            runs[m]["trials"].append(trials)
            runs[m]["epochs"].append(epochs)
    print(f"{args.seeds} seeds, budget {args.budget} trials, replayed in {time.perf_counter() - t0:.0f} s")
    for line in summary(runs):
        print(line)
    med = {m: (statistics.median(r["trials"]), statistics.median(r["epochs"])) for m, r in runs.items()}
    wins = sum(a < b for a, b in zip(runs["tpe (defaults)"]["trials"], runs["random"]["trials"])) / args.seeds
    ratios = {"tpe/random trials": med["tpe (defaults)"][0] / med["random"][0], "tpe wins vs random": wins,
              "tpe+pruning/random epochs": med["tpe + pruning"][1] / med["random"][1]}
    print("targets: tpe/random median trials {:.2f} (<= 0.5), tpe beats random in {:.0%} of seeds (>= 70%), "
          "tpe+pruning/random median epochs {:.2f} (<= 0.33)".format(*ratios.values()))
    out = {"grid": {"settings": n, "top": len(table.top), "threshold": table.threshold}, "seeds": args.seeds,
           "budget": args.budget, "runs": runs, "ratios": ratios}
    if args.live:
        rows = [live(table, s, args.live_budget) for s in range(args.live)]
        out["live"] = rows
        print(f"live tpe + pruning (real training, {args.live} seeds): trials to the top 1% "
              f"{[r[0] for r in rows]}, epochs {[r[1] for r in rows]}, seconds {[round(r[2]) for r in rows]}; "
              f"replayed median {med['tpe + pruning'][0]:.0f} trials")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=lambda x: None if x == math.inf else x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
