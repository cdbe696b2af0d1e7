"""Tests for trainkit.cost: FLOP counts against hand counts, the timer, the memory estimate and measurement, run cost,
and the errors bad input gives. Everything runs on the CPU in a few seconds."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainkit.core import DataError
from trainkit.datasets import load_datasets
from trainkit.models import CNN, MLP, GRUForecaster, TransformerClassifier, count_params
from trainkit.cost import (CPU_ATTENTION, Timing, cost_profile, count_flops, flops_per_sample, loss_for_targets,
                           matmul_flops_per_second, measure, memory_estimate, peak_memory, run_cost,
                           saved_activation_bytes, training_step)


@pytest.fixture(scope="module")
def digits():
    return load_datasets("digits")


def batch(n=8, n_in=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=g), torch.randint(0, classes, (n,), generator=g)


# --------------------------------------------------------------------------------------- FLOPs

def test_linear_layer_is_two_in_out_per_sample():
    layer, X = nn.Linear(5, 7), torch.randn(3, 5)
    assert count_flops(lambda: layer(X)) == 2 * 5 * 7 * 3
    assert flops_per_sample(layer, X) == 2 * 5 * 7


def test_backward_is_twice_forward_unless_the_input_is_data():
    layer, X = nn.Linear(5, 7), torch.randn(3, 5)
    forward = count_flops(lambda: layer(X))
    assert count_flops(lambda: layer(X.clone().requires_grad_()).sum().backward()) == 3 * forward
    assert count_flops(lambda: layer(X).sum().backward()) == 2 * forward


def test_attention_counted_on_the_cpu():
    b, h, n, d = 2, 3, 7, 5
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    forward = 4 * b * h * n * n * d  # scores and weighted sum, 2 FLOPs per multiply-add
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == forward
    # PyTorch's backward formula recomputes the scores and adds four products: 5 products of the forward's size
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == forward + 5 * forward // 2


def test_the_counter_alone_misses_cpu_attention():
    "The fact the chapter's prose rests on: if PyTorch adds the CPU kernel to its table, the prose must change."
    assert CPU_ATTENTION, "this torch has no CPU flash-attention kernel: CPU_ATTENTION is empty"
    q = k = v = torch.randn(1, 2, 4, 3)
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, k, v)
    assert plain.get_total_flops() == 0


@pytest.mark.parametrize("name, make, shape, forward", [
    ("mlp", lambda: MLP(64, 10, (128,)), (4, 1, 8, 8), 2 * (64 * 128 + 128 * 10)),
    ("cnn", lambda: CNN(), (4, 1, 8, 8), 2 * 9 * 64 * (1 * 16 + 16 * 32) + 2 * 512 * 10),
    ("gru", lambda: GRUForecaster(), (4, 24, 1), 24 * 2 * 33 * 96 + 2 * 32),
])
def test_course_models_match_hand_counts(name, make, shape, forward):
    assert flops_per_sample(make(), torch.randn(shape)) == forward


def test_transformer_matches_hand_count():
    model, X = TransformerClassifier(16, 2, max_len=12), torch.randint(0, 16, (4, 12))
    per_token = 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32) + 4 * 2 * 2 * 12 * 8  # projections, MLP, 4 heads' attention
    assert flops_per_sample(model, X) == 2 * 12 * per_token + 2 * 32 * 2


def test_training_count_leaves_the_model_untouched():
    model, (X, y) = MLP(6, 3, (4,)), batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert flops_per_sample(model, X, y) == 2 * (2 * (6 * 4 + 4 * 3)) + 2 * 4 * 3  # forward, weights' grads, one input grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loss_for_targets():
    assert loss_for_targets(torch.tensor([0, 1])) is F.cross_entropy
    mse = loss_for_targets(torch.tensor([0.5, 1.0]))
    assert float(mse(torch.tensor([[0.5], [3.0]]), torch.tensor([0.5, 1.0]))) == pytest.approx(2.0)


# --------------------------------------------------------------------------------------- time

def test_measure_calls_warmup_then_repeats():
    calls = []
    t = measure(lambda: calls.append(1), repeats=5, warmup=2, device="cpu")
    assert len(calls) == 7 and len(t.times) == 5
    assert t.best <= t.median and all(s >= 0 for s in t.times)
    assert Timing([3.0, 1.0, 2.0]).median == 2.0 and Timing([3.0, 1.0, 2.0]).best == 1.0


def test_training_step_trains():
    torch.manual_seed(0)
    model, (X, y) = MLP(6, 3, (16,)), batch(32)
    step = training_step(model, X, y, lr=1e-2)
    with torch.no_grad():
        before = F.cross_entropy(model(X), y).item()
    for _ in range(30):
        step()
    with torch.no_grad():
        assert F.cross_entropy(model(X), y).item() < before
    assert all(p.grad is None for p in model.parameters())  # zeroed (set to None) after each step


def test_matmul_peak_is_positive():
    assert matmul_flops_per_second(32, repeats=2, device="cpu") > 0


# --------------------------------------------------------------------------------------- memory

def test_saved_activations_of_an_mlp_by_hand():
    model = MLP(6, 3, (16,))
    X, y = batch(10)
    assert saved_activation_bytes(model, X, y) == 4 * 10 * (16 + 3) + 4  # ReLU output once, log-probabilities, one number
    assert saved_activation_bytes(model, X) == 4 * 10 * 16  # without the loss


def test_saved_activations_leave_out_a_batch_cut_from_a_larger_tensor(digits):
    "A slice shares its whole tensor's storage: it is the batch, not an activation, however large that storage."
    X, y = digits.X_train[:8], digits.y_train[:8]
    assert saved_activation_bytes(MLP(64, 10, (16,)), X, y) == 4 * 8 * (16 + 10) + 4


def test_memory_estimate_parts():
    model, (X, y) = MLP(6, 3, (16,)), batch()
    mem = memory_estimate(model, X, y)
    p = 4 * count_params(model)
    assert (mem["parameters"], mem["gradients"], mem["optimizer"]) == (p, p, 2 * p)
    assert memory_estimate(model, X, y, optimizer_slots=1)["optimizer"] == p


def test_peak_memory_is_the_high_point_not_the_sum():
    n = 1_000_000  # 4 MB of float32

    def one_after_another():
        a = torch.ones(n)
        del a
        b = torch.ones(n)
        del b

    def both_at_once():
        a, b = torch.ones(n), torch.ones(n)
        del a, b

    assert 4 * n <= peak_memory(one_after_another, device="cpu") < 4.2 * n
    assert 8 * n <= peak_memory(both_at_once, device="cpu") < 8.4 * n


def test_peak_memory_puts_stderr_back():
    before = os.fstat(2)
    peak_memory(lambda: torch.ones(10), device="cpu")
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)


# --------------------------------------------------------------------------------------- money and the profile

def test_run_cost():
    assert run_cost(1800, 3.0) == pytest.approx(1.5)
    assert run_cost(3600, 0.05, devices=4) == pytest.approx(0.2)
    assert run_cost(0, 3.0) == 0.0


def test_cost_profile_row(digits):
    model = CNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    row = cost_profile(model, digits, batch_size=16, device="cpu", repeats=3, peak_flops=1e11)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # measured on a copy
    assert row["parameters"] == count_params(model) and row["forward FLOPs/sample"] == 618496
    assert row["training FLOPs/sample"] > 2 * row["forward FLOPs/sample"]
    assert row["µs/step"] > 0 and 0 < row["utilisation"]
    assert row["step peak kB"] >= row["step estimate kB"] > 0
    assert "utilisation" not in cost_profile(model, digits, batch_size=4, device="cpu", repeats=1)


# --------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, message", [
    (lambda: flops_per_sample("model", torch.randn(2, 3)), "flops_per_sample: model should be a Module"),
    (lambda: flops_per_sample(nn.Linear(3, 1), torch.randn(0, 3)), "X has no samples"),
    (lambda: flops_per_sample(nn.Linear(3, 1), [[1.0, 2.0, 3.0]]), "X should be a Tensor"),
    (lambda: flops_per_sample(nn.Linear(3, 2), torch.randn(4, 3), torch.tensor([0, 1])), "y has shape (2,) but X has 4"),
    (lambda: count_flops(42), "count_flops needs a function"),
    (lambda: measure(lambda: None, repeats=0, device="cpu"), "repeats=0"),
    (lambda: measure(lambda: None, warmup=-1, device="cpu"), "warmup=-1"),
    (lambda: measure("step", device="cpu"), "measure needs a function"),
    (lambda: peak_memory(None, device="cpu"), "peak_memory needs a function"),
    (lambda: run_cost(-1, 3.0), "seconds=-1"),
    (lambda: run_cost(10, float("nan")), "price_per_hour=nan"),
    (lambda: run_cost(10, 3.0, devices=0), "devices=0"),
    (lambda: run_cost(True, 3.0), "seconds=True"),
    (lambda: memory_estimate(nn.Linear(3, 2), *batch(4, 3, 2), optimizer_slots=-1), "optimizer_slots=-1"),
    (lambda: matmul_flops_per_second(0, device="cpu"), "n=0"),
    (lambda: cost_profile(MLP(6, 3), (torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))), "cost_profile: data should be a Datasets"),
])
def test_bad_input_names_what_is_wrong(call, message):
    with pytest.raises(DataError) as e:
        call()
    assert message in str(e.value), str(e.value)


def test_model_and_batch_on_different_devices():
    model = nn.Linear(3, 2).to("meta")
    with pytest.raises(DataError, match="The model is on meta but X is on cpu"):
        training_step(model, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))


def test_batch_size_checked(digits):
    with pytest.raises(DataError, match="batch_size=0"):
        cost_profile(MLP(64, 10), digits, batch_size=0, device="cpu")
