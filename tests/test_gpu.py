"""GPU-only checks (skipped without CUDA): the same Learner on the card, bf16, CUDA-graph mode, resume.

Run on a GPU machine by tools/gpu-check.sh; on CPU CI every test here is skipped.
"""
import warnings

import pytest
import torch
from torch import nn

from trainkit.datasets import load_datasets
from trainkit.learner import Learner
from trainkit.models import CNN, MLP

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def digits():
    return load_datasets("digits")


def mlp(seed=0):
    torch.manual_seed(seed)
    return MLP(64, 10, (128,))


def test_default_device_is_cuda_and_data_lives_there(digits):
    learn = Learner(mlp(), digits)
    assert learn.device.type == "cuda" and learn.data.X_train.is_cuda and learn.on_device
    learn.fit(3, lr=1e-2)
    assert learn.history[-1]["accuracy"] > 0.9


@pytest.mark.parametrize("make", [mlp, lambda seed=0: (torch.manual_seed(seed), CNN())[1]])
def test_cuda_graph_captures_and_matches_eager(digits, make):
    eager = Learner(make(), digits).fit(4, lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would warn: fail instead
        graph = Learner(make(), digits, cuda_graph=True)
        graph.fit(4, lr=1e-2)
    # Same data order, schedule and initial weights; kernels differ (capturable vs fused AdamW, cuDNN's
    # choices), and four epochs amplify rounding, so the runs agree in outcome, not in every weight.
    # test_cuda_graph_first_epoch_equals_eager_closely checks the updates themselves.
    assert abs(graph.history[-1]["accuracy"] - eager.history[-1]["accuracy"]) < 0.03
    assert abs(graph.history[-1]["train_loss"] - eager.history[-1]["train_loss"]) < 0.05
    assert graph.step == 4 * graph.n_batches  # the partial last batch ran too


def test_cuda_graph_first_epoch_equals_eager_closely(digits):
    "One epoch at a constant rate: every step replayed must apply the same update as eager."
    a = Learner(mlp(), digits, opt="adamw").fit(1, lr=1e-3, schedule="constant")
    b = Learner(mlp(), digits, cuda_graph=True).fit(1, lr=1e-3, schedule="constant")
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=1e-4, rtol=1e-3)


def test_bf16_trains(digits):
    learn = Learner(mlp(), digits, precision="bf16").fit(4, lr=1e-2)
    assert learn.history[-1]["accuracy"] > 0.9


def test_resume_on_gpu_is_exact(digits, tmp_path):
    from trainkit.learner import Callback, CancelFit

    class Stop(Callback):
        def after_batch(self, learn):
            if learn.step == 25:
                learn.save_checkpoint(tmp_path / "ck.pt")
                raise CancelFit

    def net(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))

    torch.backends.cudnn.deterministic = True
    straight = Learner(net(), digits).fit(2, lr=3e-3)
    Learner(net(), digits, callbacks=[Stop()]).fit(2, lr=3e-3)
    resumed = Learner(net(1), digits).fit(2, lr=3e-3, resume=tmp_path / "ck.pt")
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
