"""Tests for trainkit.transfer: freezing and head swaps on built models, the few-label draws, the budget comparison's
bookkeeping, the masked-token pieces against hand computations, and the errors bad input gives. CPU, a few seconds."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from trainkit.core import DataError
from trainkit.models import CNN, MLP, TransformerClassifier
from trainkit.transfer import (LENGTH, MASK_ID, N_SOURCES, VOCAB, CanvasCNN, MaskedLM, compare_budgets, few_shot, few_shot_data,
                               fit_few, freeze, hide_first, place_on_canvas, split_canvas_digits, mask_tokens, masked_loss, new_transformer, param_counts,
                               plot_budgets, pretrain_masked, pretrained_transformer, replace_head, sequence_task,
                               source_frequencies, source_sequences, split_digits, summarise, target_line,
                               token_states, unfreeze)


@pytest.fixture(scope="module")
def digits():
    return split_digits()


# ------------------------------------------------------------------ freezing and heads

def test_freeze_counts_and_unfreeze():
    model = CNN(n_classes=5)
    total = sum(p.numel() for p in model.parameters())
    assert param_counts(model) == {"trainable": total, "frozen": 0, "total": total}
    freeze(model.features)
    assert param_counts(model) == {"trainable": 512 * 5 + 5, "frozen": total - 2565, "total": total}
    unfreeze(model)
    assert param_counts(model)["frozen"] == 0


def test_frozen_body_is_bit_equal_after_training(digits):
    torch.manual_seed(0)
    model = freeze_body(CNN(n_classes=5))
    before = copy.deepcopy(model.features.state_dict())
    head = model.head[1].weight.clone()
    fit_few(model, few_shot_data(digits[1], 3, seed=0), steps=5, seed=0, device="cpu")
    assert all(torch.equal(v, before[k]) for k, v in model.features.state_dict().items())
    assert not torch.equal(model.head[1].weight, head)


def freeze_body(model):
    freeze(model.features)
    return model


def test_replace_head_keeps_the_body_and_sizes_the_head():
    torch.manual_seed(0)
    cnn = CNN(n_classes=5)
    body = copy.deepcopy(cnn.features.state_dict())
    replace_head(cnn, 7)
    assert cnn.head[1].out_features == 7 and cnn.head[1].in_features == 512
    assert all(torch.equal(v, body[k]) for k, v in cnn.features.state_dict().items())
    tr = TransformerClassifier(10, 2)
    replace_head(tr, 3)
    assert tr(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 3)
    mlp = replace_head(MLP(4, 2), 6, attr="net")  # a Sequential ending in a Linear
    assert mlp.net[-1].out_features == 6


def test_replace_head_errors_name_what_is_wrong():
    with pytest.raises(DataError, match="n_classes=0"):
        replace_head(CNN(), 0)
    with pytest.raises(DataError, match="MLP.head is NoneType"):
        replace_head(MLP(4, 2), 3)
    with pytest.raises(DataError, match="replace_head: model"):
        replace_head("model", 3)
    with pytest.raises(DataError, match="freeze: module"):
        freeze([1, 2])


# ------------------------------------------------------------------ few labels

def test_few_shot_draws_k_per_class_seeded_and_disjoint():
    y = torch.tensor([0] * 10 + [1] * 7 + [2] * 5)
    idx = few_shot(y, 3, seed=1)
    assert torch.bincount(y[idx]).tolist() == [3, 3, 3]
    assert len(set(idx.tolist())) == 9
    assert torch.equal(idx, few_shot(y, 3, seed=1)) and not torch.equal(idx, few_shot(y, 3, seed=2))
    other = few_shot(y, 2, seed=1, exclude=idx)
    assert not set(other.tolist()) & set(idx.tolist())


def test_few_shot_errors():
    y = torch.tensor([0, 0, 1])
    with pytest.raises(DataError, match="k=2 but class 1 has only 1"):
        few_shot(y, 2)
    with pytest.raises(DataError, match="k=0"):
        few_shot(y, 0)
    with pytest.raises(DataError, match="few_shot: y"):
        few_shot([0, 1], 1)


def test_split_digits_and_few_shot_data(digits):
    source, target = digits
    assert set(source.y_train.tolist()) == set(range(5)) and source.classes == list("01234")
    assert target.classes == list("56789") and torch.bincount(target.y_test).tolist() == [70] * 5
    assert len(source.X_train) + len(source.X_valid) + len(source.X_test) + len(target.X_train) + len(target.X_test) == 1797
    few = few_shot_data(target, 4, seed=0)
    assert torch.bincount(few.y_train).tolist() == [4] * 5 and torch.bincount(few.y_valid).tolist() == [4] * 5
    assert torch.equal(few.X_test, target.X_test)
    rows = lambda X: {tuple(x.flatten().tolist()) for x in X}
    assert not rows(few.X_train) & rows(few.X_valid)
    with pytest.raises(DataError, match="few_shot_data: pool"):
        few_shot_data(target.X_train, 4)


# ------------------------------------------------------------------ comparing

def test_compare_budgets_uses_the_same_labels_for_every_method(digits):
    seen = {}
    def record(name):
        def run(data, seed):
            seen.setdefault((data.X_train.shape[0], seed), []).append(data.y_train.tolist())
            return 0.5 if name == "a" else 0.7
        return run
    res = compare_budgets({"scratch": record("a"), "b": record("b")}, digits[1], ks=(1, 2), seeds=range(3))
    assert len(res) == 2 * 2 * 3 and list(res.columns) == ["method", "k", "seed", "accuracy"]
    assert all(v[0] == v[1] for v in seen.values())
    table = summarise(res)
    assert table.loc[("b", 1), "gain"] == pytest.approx(20.0) and table.loc[("b", 2), "gain spread"] == 0
    with pytest.raises(DataError, match="baseline='c'"):
        summarise(res, baseline="c")
    with pytest.raises(DataError, match="methods must be"):
        compare_budgets({}, digits[1])
    assert plot_budgets(res).get_xscale() == "log"


def test_summarise_paired_gain_by_hand():
    res = pd.DataFrame({"method": ["scratch", "t"] * 3, "k": [10] * 6, "seed": [0, 0, 1, 1, 2, 2],
                        "accuracy": [0.80, 0.85, 0.90, 0.93, 0.70, 0.80]})
    row = summarise(res).loc[("t", 10)]
    gains = np.array([5.0, 3.0, 10.0])
    assert row["gain"] == pytest.approx(gains.mean(), abs=0.05)
    assert row["gain spread"] == pytest.approx(gains.std(ddof=1), abs=0.05)


def test_target_line():
    assert target_line([12, 14, 16], 10, "gain") == "gain: 14.0 ± 2.0 points over 3 seeds (target ≥ 10): met"
    assert target_line([1.0, 3.0], 5, "g").endswith("missed by 3.0 points")


# ------------------------------------------------------------------ sequences and pretraining

def test_source_sequences_and_task():
    freq = source_frequencies()
    assert freq.shape == (N_SOURCES, VOCAB) and torch.allclose(freq.sum(1), torch.ones(N_SOURCES))
    X, y = source_sequences(50, seed=3)
    assert X.shape == (50, LENGTH) and X.max() < VOCAB and torch.equal(X, source_sequences(50, seed=3)[0])
    X_unlab, pool = sequence_task(0, n_unlabeled=30, pool_per_source=5, n_test=20)
    assert X_unlab.shape == (30, LENGTH) and (X_unlab < VOCAB).all()
    assert (pool.X_train[:, 0] == MASK_ID).all() and (pool.X_test[:, 0] == MASK_ID).all()
    assert torch.bincount(pool.y_train).tolist() == [5] * N_SOURCES
    with pytest.raises(DataError, match="shared=1"):
        source_frequencies(shared=1)
    with pytest.raises(DataError, match="n=0"):
        source_sequences(0)


def test_mask_tokens_and_masked_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, VOCAB, (8, LENGTH), generator=g)
    inputs, mask = mask_tokens(X, 0.3, g)
    assert mask[:, 0].all() and torch.equal(inputs[mask], torch.full((int(mask.sum()),), MASK_ID))
    assert torch.equal(inputs[~mask], X[~mask])
    assert torch.equal(hide_first(X)[:, 1:], X[:, 1:]) and (hide_first(X)[:, 0] == MASK_ID).all()
    logits = torch.randn(8, LENGTH, VOCAB + 1, generator=g)
    logp = logits.log_softmax(-1)
    by_hand = -np.mean([float(logp[i, j, X[i, j]]) for i in range(8) for j in range(LENGTH) if mask[i, j]])
    assert float(masked_loss(logits, X, mask)) == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(DataError, match="p=1.5"):
        mask_tokens(X, 1.5)


def test_token_states_match_the_classifier_at_position_0():
    model = new_transformer(0).eval()
    x = hide_first(source_sequences(4)[0])
    with torch.no_grad():
        assert torch.allclose(model.head(token_states(model, x)[:, 0]), model(x), atol=1e-6)
        assert MaskedLM(model)(x).shape == (4, LENGTH, VOCAB + 1)


def test_pretrain_masked_lowers_the_loss_and_leaves_the_head():
    X, _ = source_sequences(300, seed=0)
    model = new_transformer(0)
    head = copy.deepcopy(model.head.state_dict())
    losses = pretrain_masked(model, X, steps=60, batch_size=64, seed=0, device="cpu")
    assert len(losses) == 60 and np.mean(losses[-10:]) < np.mean(losses[:10])
    assert all(torch.equal(v, head[k]) for k, v in model.head.state_dict().items())
    with pytest.raises(DataError, match="int64 token ids"):
        pretrain_masked(model, X.float(), steps=1)
    with pytest.raises(DataError, match="pretrain_masked: X"):
        pretrain_masked(model, X.tolist(), steps=1)
    bad = X.clone()
    bad[0, 3] = MASK_ID
    with pytest.raises(DataError, match=r"leaves 0..11 for tokens \(12 is the mask\)"):
        pretrain_masked(model, bad, steps=1)
    with pytest.raises(DataError, match="pretrain_masked: model"):
        pretrain_masked(CNN(), X, steps=1)


def test_pretrained_transformer_is_deterministic_and_shaped():
    m1, d1 = pretrained_transformer(seed=1, fast=True)
    m2, d2 = pretrained_transformer(seed=1, fast=True)
    assert isinstance(m1, TransformerClassifier) and m1.head.out_features == N_SOURCES
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert torch.equal(d1.X_train, d2.X_train) and len(d1.X_train) == 10 * N_SOURCES and len(d1.X_test) == 1000
    assert next(m1.parameters()).device.type == "cpu"


# ------------------------------------------------------------------ digits on a canvas

def test_place_on_canvas_pastes_each_image_whole_and_seeded():
    images = torch.rand(3, 1, 8, 8) * 0.5 + 0.25
    out = place_on_canvas(images, size=12, copies=2, noise=0.0, seed=1)
    assert out.shape == (6, 1, 12, 12)
    for i in range(6):  # without noise, the canvas holds the image exactly once, zeros elsewhere
        nz = torch.nonzero(out[i, 0])
        r, c = int(nz[:, 0].min()), int(nz[:, 1].min())
        assert torch.equal(out[i, :, r:r + 8, c:c + 8], images[i % 3])
        assert float(out[i].sum()) == pytest.approx(float(images[i % 3].sum()), rel=1e-6)
    assert torch.equal(out, place_on_canvas(images, size=12, copies=2, noise=0.0, seed=1))
    noisy = place_on_canvas(images, size=12, noise=0.1, seed=1)
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1 and not torch.equal(noisy, out[:3])


def test_place_on_canvas_errors_name_the_argument():
    with pytest.raises(DataError, match="size"):
        place_on_canvas(torch.zeros(2, 1, 8, 8), size=6)
    with pytest.raises(DataError, match="copies"):
        place_on_canvas(torch.zeros(2, 1, 8, 8), copies=0)
    with pytest.raises(DataError, match="noise"):
        place_on_canvas(torch.zeros(2, 1, 8, 8), noise=-1)
    with pytest.raises(DataError, match="shape"):
        place_on_canvas(torch.zeros(8, 8))
    with pytest.raises(DataError, match="images"):
        place_on_canvas(np.zeros((2, 1, 8, 8)))


def test_split_canvas_digits_shapes_and_counts():
    from sklearn.datasets import load_digits
    n_source = int((load_digits().target < 5).sum())
    source, target = split_canvas_digits(size=12, copies=2)
    assert len(source.X_train) + len(source.X_valid) + len(source.X_test) == 2 * n_source
    assert len(target.X_train) + len(target.X_test) == 1797 - n_source  # each target image once
    assert source.X_train.shape[1:] == (1, 12, 12) and target.X_test.shape[1:] == (1, 12, 12)
    assert torch.bincount(target.y_test).tolist() == [70] * 5 and target.classes == list("56789")
    again, _ = split_canvas_digits(size=12, copies=2)
    assert torch.equal(again.X_train, source.X_train)


def test_canvas_cnn_any_canvas_size_and_head_swap():
    model = CanvasCNN(n_classes=5).eval()
    assert model(torch.rand(4, 1, 16, 16)).shape == (4, 5) and model(torch.rand(2, 1, 20, 20)).shape == (2, 5)
    assert model.features(torch.rand(3, 1, 16, 16)).shape == (3, 64, 1, 1)  # global pooling: what, not where
    replace_head(model, 3)
    freeze(model.features)
    assert param_counts(model)["trainable"] == 64 * 3 + 3
    assert model(torch.rand(1, 1, 16, 16)).shape == (1, 3)
