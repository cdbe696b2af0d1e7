"""Training speed: the Learner against the loops people write, on the same model, data and process.

    python bench/train_speed.py [--epochs 20] [--repeats 3] [--json results.json]

Rows, for a digits MLP (64-128-10) and the two-conv digits CNN, batch 64, AdamW + one-cycle, each
epoch followed by a validation pass (loss and accuracy):
  dataloader   a plain eager loop over a DataLoader of CPU tensors (moved to the device per batch)
  on-device    a plain eager loop with the data on the device, batched by indexing
  learner      trainkit's Learner, defaults
  lightning    Lightning's Trainer (when installed), standard DataLoader usage
  compiled     the on-device loop with torch.compile(model, mode="reduce-overhead") (CUDA only): Inductor's
               fused kernels, and CUDA graphs for forward and backward; the optimizer step stays eager
  learner+graph  the Learner with cuda_graph=True (CUDA only): the whole step, optimizer and schedule
               included, captured once and replayed
Then time to >= 97% test accuracy on digits: the Learner against scikit-learn's MLPClassifier.
Timings are medians over --repeats interleaved runs (steady-state epochs, and whole fits); ratios
compare rows measured in this same run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainkit.core import environment, get_device
from trainkit.datasets import load_datasets
from trainkit.learner import Callback, CancelFit, Learner
from trainkit.models import CNN, MLP

warnings.filterwarnings("ignore")


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def stamp(dev, stamps):
    "Record the time at an epoch boundary, after the device has finished its work."
    sync(dev)
    stamps.append(time.perf_counter())


def make_model(kind, seed=0):
    torch.manual_seed(seed)
    return MLP(64, 10, (128,)) if kind == "mlp" else CNN()


def opt_sched(model, dev, lr, total):
    kw = {"fused": True} if dev.type == "cuda" else {"foreach": True}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, **kw)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25, cycle_momentum=False)
    return opt, sched


@torch.no_grad()
def validate(model, X, y):
    model.eval()
    out = model(X)
    res = (F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item())
    model.train()
    return res


def plain_dataloader(ds, kind, epochs, dev, stamps, bs=64, lr=3e-3):
    from torch.utils.data import DataLoader, TensorDataset
    model = make_model(kind).to(dev)
    dl = DataLoader(TensorDataset(ds.X_train, ds.y_train), batch_size=bs, shuffle=True,
                    generator=torch.Generator().manual_seed(0), pin_memory=dev.type == "cuda")
    opt, sched = opt_sched(model, dev, lr, epochs * len(dl))
    Xv, yv = ds.X_valid.to(dev), ds.y_valid.to(dev)
    for _ in range(epochs):
        stamp(dev, stamps)
        total = 0.0
        for xb, yb in dl:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()
            total += loss.item()
        validate(model, Xv, yv)
    stamp(dev, stamps)
    return model


def plain_on_device(ds, kind, epochs, dev, stamps, bs=64, lr=3e-3, wrap=lambda m: m):
    model = wrap(make_model(kind).to(dev))
    X, y, Xv, yv = ds.X_train.to(dev), ds.y_train.to(dev), ds.X_valid.to(dev), ds.y_valid.to(dev)
    n_batches = (len(X) + bs - 1) // bs
    opt, sched = opt_sched(model, dev, lr, epochs * n_batches)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        stamp(dev, stamps)
        total = torch.zeros((), device=dev)
        for idx in torch.randperm(len(X), generator=g).to(dev).split(bs):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            total += loss.detach()
        total.item()
        validate(model, Xv, yv)
    stamp(dev, stamps)
    return model


def compiled_on_device(ds, kind, epochs, dev, stamps, bs=64, lr=3e-3):
    "plain_on_device with the model compiled by torch.compile in reduce-overhead mode (its compile time is in the fit)."
    import torch._dynamo
    torch._dynamo.config.cache_size_limit = 64  # a fresh model per fit: do not fall back to eager after 8 recompiles
    return plain_on_device(ds, kind, epochs, dev, stamps, bs, lr, wrap=lambda m: torch.compile(m, mode="reduce-overhead"))


class Stamps(Callback):
    def __init__(self, dev, stamps): self.dev, self.stamps = dev, stamps
    def before_epoch(self, learn): stamp(self.dev, self.stamps)
    def after_fit(self, learn): stamp(self.dev, self.stamps)


def learner(ds, kind, epochs, dev, stamps, cuda_graph=False, bs=64, lr=3e-3):
    learn = Learner(make_model(kind), ds, batch_size=bs, device=dev, cuda_graph=cuda_graph, callbacks=[Stamps(dev, stamps)])
    learn.fit(epochs, lr=lr)
    return learn.model


def lightning_trainer(ds, kind, epochs, dev, stamps, bs=64, lr=3e-3):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = make_model(kind)

        def training_step(self, batch, i):
            return F.cross_entropy(self.model(batch[0]), batch[1])

        def validation_step(self, batch, i):
            out = self.model(batch[0])
            self.log_dict({"vl": F.cross_entropy(out, batch[1]), "va": (out.argmax(1) == batch[1]).float().mean()})

        def on_train_epoch_start(self):
            stamp(dev, stamps)

        def on_fit_end(self):
            stamp(dev, stamps)

        def configure_optimizers(self):
            opt, sched = opt_sched(self, dev, lr, epochs * ((len(ds.X_train) + bs - 1) // bs))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    tl = DataLoader(TensorDataset(ds.X_train, ds.y_train), batch_size=bs, shuffle=True)
    vl = DataLoader(TensorDataset(ds.X_valid, ds.y_valid), batch_size=len(ds.X_valid))
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if dev.type == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    m = Module()
    trainer.fit(m, tl, vl)
    return m.model


def time_to_accuracy(ds, target=0.97, max_epochs=200):
    "Seconds of training (with a test evaluation after every epoch) until test accuracy >= target."
    from sklearn.neural_network import MLPClassifier
    Xtr, ytr = ds.X_train.flatten(1).numpy(), ds.y_train.numpy()
    Xte, yte = ds.X_test.flatten(1).numpy(), ds.y_test.numpy()
    res = {}
    clf = MLPClassifier(hidden_layer_sizes=(100,), random_state=0)
    t, epochs, acc = time.perf_counter(), 0, 0.0
    while acc < target and epochs < max_epochs:
        clf.partial_fit(Xtr, ytr, classes=np.arange(10))
        epochs += 1
        acc = clf.score(Xte, yte)
    res["MLPClassifier"] = (time.perf_counter() - t, epochs, acc)
    class StopAtTarget(Callback):  # the same check as above: test accuracy after every epoch
        def after_epoch(self, learn):
            self.acc = float((learn.predict(ds.X_test).argmax(1) == ds.y_test).float().mean())
            if self.acc >= target:
                raise CancelFit
    stop = StopAtTarget()
    t = time.perf_counter()
    learn = Learner(make_model("mlp"), ds, device="cpu", batch_size=64, callbacks=[stop])
    learn.fit(10, lr=1e-2)  # a one-cycle schedule planned for 10 epochs, stopped as soon as the target is met
    epochs, acc = len(learn.history), stop.acc
    res["Learner (MLP)"] = (time.perf_counter() - t, epochs, acc)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    dev = get_device(args.device)
    ds = load_datasets("digits")
    env = environment()
    print(f"device {dev} ({env['gpu'] or env['platform']}), torch {env['torch']}, threads {env['threads']}")
    methods = {"dataloader": plain_dataloader, "on-device": plain_on_device, "learner": learner}
    try:
        import lightning  # noqa: F401
        methods["lightning"] = lightning_trainer
    except ImportError:
        print("lightning not installed: its row is skipped")
    if dev.type == "cuda":
        methods["compiled"] = compiled_on_device
        methods["learner+graph"] = lambda *a, **k: learner(*a, cuda_graph=True, **k)
    steps = (len(ds.X_train) + 63) // 64  # per epoch
    results, whole = {}, {}
    all_methods = dict(methods)
    for kind in ("mlp", "cnn"):
        methods = dict(all_methods)
        for name, fn in list(methods.items()):  # warm-up: kernels, caches, lazy imports (and compilation)
            try:
                fn(ds, kind, 1, dev, [])
            except Exception as e:  # e.g. torch.compile without a working compiler: report the row, keep the rest
                print(f"{kind} {name}: skipped, the warm-up failed: {type(e).__name__}: {str(e)[:300]}")
                del methods[name]
        epoch_s, fit_s = {m: [] for m in methods}, {m: [] for m in methods}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                stamps = []
                t = time.perf_counter()
                fn(ds, kind, args.epochs, dev, stamps)
                fit_s[name].append(time.perf_counter() - t)
                epoch_s[name] += [b - a for a, b in zip(stamps[1:-1], stamps[2:])]  # steady state: not epoch 0
        results[kind] = {m: statistics.median(v) for m, v in epoch_s.items()}
        whole[kind] = {m: statistics.median(v) for m, v in fit_s.items()}
    print("\nSteady state (median epoch, training + validation, epoch 0 excluded); 'whole fit' includes set-up "
          "(and, for CUDA graphs, capture).")
    print(f"\n{'model':5} {'loop':14} {'us/step':>9} {'samples/s':>11} {'vs on-device':>13} {'whole fit s':>12} {'vs on-device':>13}")
    for kind, r in results.items():
        for m, t in r.items():
            print(f"{kind:5} {m:14} {t / steps * 1e6:9.1f} {len(ds.X_train) / t:11.0f} {r['on-device'] / t:12.2f}x"
                  f" {whole[kind][m]:12.3f} {whole[kind]['on-device'] / whole[kind][m]:12.2f}x")
    tta = time_to_accuracy(ds) if dev.type == "cpu" or args.device == "cpu" else None
    if tta:
        print("\ntime to >= 97% test accuracy on digits (CPU):")
        for name, (sec, ep, acc) in tta.items():
            print(f"  {name:16} {sec:7.3f} s  ({ep} epochs, test accuracy {acc:.3f})")
    key = {f"{k} learner/on-device time": round(r["learner"] / r["on-device"], 3) for k, r in results.items()}
    for k, r in results.items():
        key[f"{k} learner vs dataloader speed"] = round(r["dataloader"] / r["learner"], 2)
        if "lightning" in r:
            key[f"{k} learner vs lightning speed"] = round(r["lightning"] / r["learner"], 2)
        if "learner+graph" in r:
            key[f"{k} graph vs on-device speed"] = round(r["on-device"] / r["learner+graph"], 2)
            key[f"{k} graph vs on-device whole fit"] = round(whole[k]["on-device"] / whole[k]["learner+graph"], 2)
        if "compiled" in r:
            key[f"{k} graph vs compiled speed"] = round(r["compiled"] / r["learner+graph"], 2)
            key[f"{k} graph vs compiled whole fit"] = round(whole[k]["compiled"] / whole[k]["learner+graph"], 2)
    if tta:
        key["time-to-97% learner/MLPClassifier"] = round(tta["Learner (MLP)"][0] / tta["MLPClassifier"][0], 3)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "epochs": args.epochs, "repeats": args.repeats, "epoch_seconds": results,
                       "fit_seconds": whole, "time_to_97": tta, "key": key}, f, indent=1, default=str)
    print("\nkey ratios: " + "; ".join(f"{k} {v}" for k, v in key.items()))


if __name__ == "__main__":
    sys.exit(main())
