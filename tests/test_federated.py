"""Tests for trainkit.federated: the client splits, the aggregation against Flower's, FedSGD as pooled gradient
descent, per-example gradients against Opacus's GradSampleModule, the RDP accountant against Opacus's, and the
errors bad input gives. Everything runs on the CPU in seconds."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.server.strategy.aggregate import aggregate as flower_aggregate
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant

from trainkit.core import DataError, seed_everything
from trainkit.federated import (accuracy, clip_and_noise, dp_steps, federate, fedsgd, get_arrays, iid_split,
                                label_skew_split, local_train, noise_for_epsilon, per_example_grads, rdp_epsilon,
                                rounds_to, set_arrays, weighted_average)
from trainkit.models import MLP


def toy(n=120, classes=6, n_in=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = 3 * torch.randn(classes, n_in, generator=g)
    X = 0.5 * torch.randn(n, n_in, generator=g) + centres[y]  # learnable: each class around its own centre
    return X, y


# --------------------------------------------------------------------------------------- splits

def test_iid_split_deals_every_row_once_evenly():
    _, y = toy(103)
    parts = iid_split(y, 10, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert {len(p) for p in parts} == {10, 11}
    assert all((a == b).all() for a, b in zip(parts, iid_split(y, 10, seed=1)))
    assert any((a != b).any() for a, b in zip(parts, iid_split(y, 10, seed=2)))


@pytest.mark.parametrize("n_clients,k", [(10, 2), (6, 1), (6, 3), (8, 2)])
def test_label_skew_gives_each_client_k_classes_and_every_row_once(n_clients, k):
    _, y = toy(120, classes=6)
    parts = label_skew_split(y, n_clients, k, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(120))
    assert [len(set(y[p].tolist())) for p in parts] == [k] * n_clients


def test_label_skew_on_digits_shape():
    y = torch.as_tensor(np.repeat(np.arange(10), 12))
    parts = label_skew_split(y, 10, 2, seed=3)
    holders = np.zeros(10, int)
    for p in parts:
        holders[np.unique(y[p].numpy())] += 1
    assert holders.tolist() == [2] * 10  # every digit on exactly two clients


@pytest.mark.parametrize("call,words", [
    (lambda: label_skew_split(torch.rand(10), 2), "integer class labels"),
    (lambda: label_skew_split(torch.zeros(3, 2, dtype=torch.long), 2), "1-d"),
    (lambda: iid_split(torch.arange(3), 5), "n_clients=5"),
    (lambda: iid_split(torch.arange(3), 0), "n_clients=0"),
    (lambda: label_skew_split(torch.arange(10) % 5, 2, 6), "classes_per_client=6"),
    (lambda: label_skew_split(torch.arange(10) % 5, 2, 2), "without a client"),
    (lambda: label_skew_split(torch.arange(10) % 5, 5, 0), "classes_per_client=0"),
])
def test_split_errors_name_the_argument(call, words):
    with pytest.raises(DataError, match=words):
        call()


# --------------------------------------------------------------------------------------- arrays and aggregation

def test_arrays_round_trip_and_errors():
    seed_everything(0)
    a, b = MLP(5, 3, (4,)), MLP(5, 3, (4,))
    set_arrays(b, get_arrays(a))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(DataError, match="2 entries"):
        set_arrays(b, get_arrays(a)[:2])
    wrong = get_arrays(a)
    wrong[0] = np.zeros((2, 2), np.float32)
    with pytest.raises(DataError, match="net.1.weight"):
        set_arrays(b, wrong)


def test_weighted_average_equals_flower():
    rng = np.random.default_rng(0)
    shapes = [(64, 64), (64,), (10, 64), (10,)]
    results = [([rng.normal(size=s).astype(np.float32) for s in shapes], int(n)) for n in rng.integers(1, 200, 10)]
    for ours, theirs in zip(weighted_average(results), flower_aggregate(results)):
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-6


def test_weighted_average_by_hand_and_errors():
    out = weighted_average([([np.array([1.0, 3.0])], 1), ([np.array([5.0, 7.0])], 3)])
    np.testing.assert_allclose(out[0], [4.0, 6.0])
    with pytest.raises(DataError, match="empty"):
        weighted_average([])
    with pytest.raises(DataError, match="example counts"):
        weighted_average([([np.ones(2)], 0), ([np.ones(2)], 0)])
    with pytest.raises(DataError, match="example counts"):
        weighted_average([([np.ones(2)], 1.5)])
    with pytest.raises(DataError, match="same number of arrays"):
        weighted_average([([np.ones(2)], 1), ([np.ones(2), np.ones(1)], 1)])


# --------------------------------------------------------------------------------------- training

def test_fedsgd_round_is_one_pooled_gradient_step():
    X, y = toy()
    seed_everything(0)
    start = MLP(5, 6, (8,))
    fed, pooled = copy.deepcopy(start), copy.deepcopy(start)
    clients = [(X[p], y[p]) for p in label_skew_split(y, 6, 2, seed=0)]
    fedsgd(fed, clients, 1, (X, y), lr=0.5, device="cpu")
    local_train(pooled, X, y, epochs=1, batch_size=None, lr=0.5)
    for a, b in zip(fed.parameters(), pooled.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_federate_history_bytes_seed_and_stop():
    X, y = toy()
    clients = [(X[p], y[p]) for p in iid_split(y, 4, seed=0)]
    def run(**kw):
        seed_everything(0)
        model = MLP(5, 6, (8,))
        return model, federate(model, clients, 3, (X, y), epochs=1, batch_size=10, lr=0.1, seed=0, device="cpu", **kw)
    model, h = run()
    n_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert [r["round"] for r in h] == [1, 2, 3]
    assert [r["bytes"] for r in h] == [2 * 4 * n_bytes * r for r in (1, 2, 3)]
    assert h[-1]["accuracy"] == accuracy(model, X, y)
    assert h == run()[1]  # same seed, same history
    _, stopped = run(stop_at=0.0)
    assert len(stopped) == 1 and rounds_to(h, 0.0) == 1 and rounds_to(h, 1.01) is None


def test_federate_learns_under_label_skew():
    X, y = toy(240)
    clients = [(X[p], y[p]) for p in label_skew_split(y, 6, 2, seed=0)]
    seed_everything(0)
    model = MLP(5, 6, (16,))
    h = federate(model, clients, 15, (X, y), epochs=1, batch_size=10, lr=0.1, device="cpu")
    assert h[-1]["accuracy"] > 0.5 > 1 / 6  # far above chance


@pytest.mark.parametrize("kw,words", [
    ({"clients": []}, "non-empty list"),
    ({"clients": [(torch.zeros(3, 5), torch.zeros(2, dtype=torch.long))]}, r"clients\[0\]"),
    ({"clients": [torch.zeros(3)]}, r"clients\[0\]"),
    ({"rounds": 0}, "rounds=0"),
    ({"epochs": 0}, "epochs=0"),
    ({"clip": 1.0, "batch_size": None}, "batch_size"),
    ({"clip": 0.0}, "clip"),
])
def test_federate_errors_name_the_argument(kw, words):
    X, y = toy(20)
    args = {"clients": [(X, y)], "rounds": 1, "epochs": 1, "batch_size": 5}
    args.update(kw)
    with pytest.raises(DataError, match=words):
        federate(MLP(5, 6, (4,)), args.pop("clients"), args.pop("rounds"), (X, y), device="cpu", **args)


# --------------------------------------------------------------------------------------- DP-SGD

@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # Opacus's hooks on a model whose input needs no grad
def test_per_example_grads_equal_opacus_grad_samples():
    X, y = toy(16)
    seed_everything(0)
    model = MLP(5, 6, (8,))
    ours = per_example_grads(model, X, y)
    gsm = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    F.cross_entropy(gsm(X), y, reduction="sum").backward()  # sum: each grad_sample is one example's own gradient
    for name, p in gsm._module.named_parameters():
        torch.testing.assert_close(ours[name], p.grad_sample, atol=1e-6, rtol=1e-5)


def test_clip_and_noise_bounds_and_noise_scale():
    X, y = toy(32)
    seed_everything(0)
    grads = per_example_grads(MLP(5, 6, (8,)), X, y)
    clipped = clip_and_noise(grads, clip=0.1, noise=0.0, expected_batch=1)  # a sum of 32 vectors of norm <= 0.1
    assert torch.sqrt(sum(g.pow(2).sum() for g in clipped.values())) <= 32 * 0.1 + 1e-5
    one = clip_and_noise({k: g[:1] for k, g in grads.items()}, clip=0.1, noise=0.0, expected_batch=1)
    torch.testing.assert_close(torch.sqrt(sum(g.pow(2).sum() for g in one.values())), torch.tensor(0.1), atol=1e-5, rtol=0)
    zeros = {"w": torch.zeros(8, 20_000)}
    noisy = clip_and_noise(zeros, clip=2.0, noise=1.5, expected_batch=4.0, generator=torch.Generator().manual_seed(0))
    assert abs(noisy["w"].std().item() / (1.5 * 2.0 / 4.0) - 1) < 0.03 and abs(noisy["w"].mean().item()) < 0.02


def test_empty_poisson_batch_gives_noise_only():
    seed_everything(0)
    model = MLP(5, 6, (8,))
    empty = per_example_grads(model, torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    assert {k: tuple(v.shape) for k, v in empty.items()} == {k: (0, *p.shape) for k, p in model.named_parameters()}
    out = clip_and_noise(empty, clip=1.0, noise=0.0, expected_batch=5)
    assert all(torch.equal(v, torch.zeros_like(v)) for v in out.values())


def test_dp_federate_runs_and_is_seeded():
    X, y = toy(60)
    clients = [(X[p], y[p]) for p in iid_split(y, 3, seed=0)]
    def run():
        seed_everything(0)
        return federate(MLP(5, 6, (8,)), clients, 2, (X, y), batch_size=5, lr=0.1, clip=1.0, noise=1.0, device="cpu")
    assert run() == run()


# --------------------------------------------------------------------------------------- accountant

@pytest.mark.parametrize("sigma,q,steps,delta", [(1.855, 0.2, 250, 1e-3), (1.0, 0.01, 10_000, 1e-5),
                                                 (2.0, 0.5, 30, 1e-2), (4.0, 1.0, 100, 1e-5)])
def test_rdp_epsilon_equals_opacus(sigma, q, steps, delta):
    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    orders = list(range(2, 64))
    theirs = acc.get_privacy_spent(delta=delta, alphas=orders)[0]
    assert abs(rdp_epsilon(sigma, q, steps, delta, tuple(orders)) - theirs) <= 1e-6 * max(1.0, theirs)


def test_noise_for_epsilon_is_the_smallest_noise_within_budget():
    q, steps = dp_steps(126, 25, epochs=1, rounds=50)
    assert (round(q, 4), steps) == (0.1984, 250)
    sigma = noise_for_epsilon(8.0, q, steps, 1e-3)
    assert rdp_epsilon(sigma, q, steps, 1e-3) <= 8.0 < rdp_epsilon(sigma - 0.002, q, steps, 1e-3)
    assert rdp_epsilon(0.0, q, steps, 1e-3) == float("inf")
    assert rdp_epsilon(1.0, 0.0, steps, 1e-3) < rdp_epsilon(1.0, q, steps, 1e-3)


@pytest.mark.parametrize("kw,words", [({"delta": 0.0}, "delta=0.0"), ({"sample_rate": 1.5}, "sample_rate=1.5"),
                                      ({"noise": -1.0}, "noise=-1.0"), ({"steps": -1}, "steps=-1")])
def test_rdp_epsilon_errors_name_the_argument(kw, words):
    args = {"noise": 1.0, "sample_rate": 0.1, "steps": 10, "delta": 1e-5, **kw}
    with pytest.raises(DataError, match=words):
        rdp_epsilon(**args)
