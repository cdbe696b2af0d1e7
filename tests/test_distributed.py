"""Tests for trainkit.distributed: two gloo processes on the CPU against one process (the same weights after several
steps, torch.allclose defaults), DDP's broadcast, a model with a frozen and a tied parameter, rank 0 alone writing
checkpoints and logs, a checkpoint from 2 ranks resumed in 1 process, the launcher, clear errors for bad input, and two
Optuna workers sharing one study in a real PostgreSQL server.

The PostgreSQL test reads TRAINKIT_TEST_POSTGRES_URL (tools/install-services.sh starts Debian's PostgreSQL and prints it;
tools/test.sh exports it). Without a server it skips, unless TRAINKIT_POSTGRES_REQUIRED is set (CI), where it fails."""
from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from trainkit.callbacks import Checkpoint, EarlyStopping
from trainkit.core import DataError
from trainkit.datasets import Datasets
from trainkit.distributed import (DistributedLearner, init_distributed, launch, launch_command, params_agree,
                                  rank0_only, run_workers, shard_indices, study_storage)
from trainkit.learner import Learner
from trainkit.models import MLP

EPOCHS, BATCH = 3, 16  # 96 rows / 16 = 6 steps per epoch: 18 steps


def toy_data(n: int = 96, seed: int = 0) -> Datasets:
    "Three Gaussian blobs in 8 dimensions: train, valid and (empty) test tensors."
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n + 48,), generator=g)
    X = torch.randn(n + 48, 8, generator=g) + 1.5 * torch.nn.functional.one_hot(y, 8).float()
    return Datasets(X[:n], y[:n], X[n:], y[n:], X[:0], y[:0], [f"x{i}" for i in range(8)], ["a", "b", "c"])


class FrozenTied(nn.Module):
    "A frozen layer (requires_grad=False) and one weight matrix shared (tied) by two layers."
    def __init__(self):
        super().__init__()
        self.inp, self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.b.weight = self.a.weight  # tied: one Parameter, used twice, with two biases
        self.frozen, self.head = nn.Linear(16, 16), nn.Linear(16, 3)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = torch.relu(self.frozen(torch.relu(self.a(h))))
        return self.head(torch.relu(self.b(h)))


# The script each rank runs: models built from rank-dependent seeds; rank 0 saves its final weights.
WORKER = '''import json, sys
from pathlib import Path
import torch
from torch import nn
from trainkit.callbacks import Checkpoint
from trainkit.datasets import Datasets
from trainkit.distributed import DistributedLearner, cleanup_distributed, init_distributed, params_agree
from trainkit.learner import Callback, CancelFit
from trainkit.models import MLP
sys.path.insert(0, sys.argv[2])
from test_distributed import BATCH, EPOCHS, FrozenTied, toy_data

class Log(Callback):  # writes a file, so must run on rank 0 only
    rank0_only = True
    def __init__(self, path): self.path = path
    def after_epoch(self, learn):
        with open(self.path, "a") as f: f.write(json.dumps(learn.history[-1]) + "\\n")

class Seen(Callback):  # runs on every rank: records that it ran
    def __init__(self): self.epochs = 0
    def after_epoch(self, learn): self.epochs += 1

class StopAfterFirstEpoch(Callback):  # a "crash" after epoch 1's checkpoint
    order = 90
    def after_epoch(self, learn): raise CancelFit()

out = Path(sys.argv[1])
info = init_distributed()
torch.set_num_threads(1)
data, report = toy_data(), {"rank": info.rank, "world_size": info.world_size, "backend": info.backend}
for name, build in [("mlp", lambda: MLP(8, 3, (16,))), ("frozen_tied", FrozenTied)]:
    torch.manual_seed(100 + info.rank)  # a different first draw on each rank
    model = build()
    seen = Seen()
    report[name + "_before"] = params_agree(model)
    learn = DistributedLearner(model, data, batch_size=BATCH, seed=7, callbacks=[seen, Log(out / f"log-{name}-rank{info.rank}.jsonl")])
    report[name + "_after"] = params_agree(learn.model)
    report[name + "_first"] = {k: v.tolist() for k, v in learn.model.state_dict().items()}
    learn.fit(EPOCHS, lr=1e-2)
    report[name + "_seen"], report[name + "_end"] = seen.epochs, params_agree(learn.model)
    report[name + "_history"] = learn.history
    report[name + "_tied"] = learn.model.a.weight is learn.model.b.weight if name == "frozen_tied" else None
    if info.rank == 0:
        torch.save(learn.model.state_dict(), out / f"{name}.pt")
torch.manual_seed(100 + info.rank)
learn = DistributedLearner(MLP(8, 3, (16,)), data, batch_size=BATCH, seed=7,
                           callbacks=[Checkpoint(out / f"ckpt-rank{info.rank}"), StopAfterFirstEpoch()])
learn.fit(EPOCHS, lr=1e-2)
(out / f"report-rank{info.rank}.json").write_text(json.dumps(report))
cleanup_distributed()
'''


@pytest.fixture(scope="module")
def ddp_job(tmp_path_factory):
    "Run WORKER on 2 gloo ranks once; the folder holding what they wrote."
    out = tmp_path_factory.mktemp("ddp")
    (out / "worker.py").write_text(WORKER)
    launch(out / "worker.py", [out, Path(__file__).parent], nproc=2, timeout=300)
    return out


def reports(out):
    return [json.loads((out / f"report-rank{r}.json").read_text()) for r in range(2)]


def one_process(build, epochs=EPOCHS, resume=None):
    "The same run in this process, from rank 0's first draw."
    torch.manual_seed(100)
    return Learner(build(), toy_data(), batch_size=BATCH, seed=7).fit(epochs, lr=1e-2, resume=resume)


# ------------------------------------------------------------------------------------------- two gloo processes

def test_two_processes_end_with_the_weights_of_one_at_the_same_global_batch(ddp_job):
    r0, r1 = reports(ddp_job)
    assert (r0["world_size"], r0["backend"], r1["rank"]) == (2, "gloo", 1)
    two, one = torch.load(ddp_job / "mlp.pt", weights_only=True), one_process(lambda: MLP(8, 3, (16,)))
    for k, v in one.model.state_dict().items():
        assert torch.allclose(two[k], v), f"{k}: largest difference {(two[k] - v).abs().max():.2e}"
    assert r0["mlp_history"][-1]["train_loss"] == pytest.approx(one.history[-1]["train_loss"], rel=1e-5)
    assert r0["mlp_history"] == r1["mlp_history"]  # every rank reports the whole job's losses


def test_ranks_drawn_from_different_seeds_agree_after_wrapping(ddp_job):
    for r in reports(ddp_job):
        assert r["mlp_before"] is False and r["frozen_tied_before"] is False  # different first weights
        assert r["mlp_after"] is True and r["frozen_tied_after"] is True  # DDP broadcast rank 0's
        assert r["mlp_end"] is True and r["frozen_tied_end"] is True  # and the copies stayed equal
    r0, r1 = reports(ddp_job)
    assert r0["mlp_first"] == r1["mlp_first"]
    torch.manual_seed(100)
    rank0_draw = MLP(8, 3, (16,)).state_dict()
    assert all(torch.equal(torch.tensor(r1["mlp_first"][k]), v) for k, v in rank0_draw.items())


def test_a_frozen_and_a_tied_parameter_train_as_in_one_process(ddp_job):
    two, one = torch.load(ddp_job / "frozen_tied.pt", weights_only=True), one_process(FrozenTied)
    for k, v in one.model.state_dict().items():
        assert torch.allclose(two[k], v), f"{k}: largest difference {(two[k] - v).abs().max():.2e}"
    first = reports(ddp_job)[0]["frozen_tied_first"]
    assert torch.equal(two["frozen.weight"], torch.tensor(first["frozen.weight"]))  # frozen: never moved
    assert not torch.equal(two["a.weight"], torch.tensor(first["a.weight"]))  # tied: trained...
    assert torch.equal(two["a.weight"], two["b.weight"]) and all(r["frozen_tied_tied"] for r in reports(ddp_job))


def test_rank_0_alone_writes_checkpoints_and_logs_while_other_callbacks_run_everywhere(ddp_job):
    assert sorted(p.name for p in (ddp_job / "ckpt-rank0").iterdir()) == ["best.pt", "last.pt"]
    assert not (ddp_job / "ckpt-rank1").exists()
    assert len((ddp_job / "log-mlp-rank0.jsonl").read_text().splitlines()) == EPOCHS
    assert not (ddp_job / "log-mlp-rank1.jsonl").exists()
    assert all(r["mlp_seen"] == EPOCHS for r in reports(ddp_job))


def test_a_checkpoint_from_two_ranks_resumes_in_one_process(ddp_job):
    resumed = one_process(lambda: MLP(8, 3, (16,)), resume=ddp_job / "ckpt-rank0" / "last.pt")
    straight = one_process(lambda: MLP(8, 3, (16,)))
    for k, v in straight.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[k], v), k
    assert len(resumed.history) == EPOCHS


# ------------------------------------------------------------------------------------------- in one process

@pytest.mark.parametrize("n", [1, 5, 20, 21, 97])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_indices_match_distributed_sampler(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    for r in range(world):
        want = order[list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False))]
        assert torch.equal(shard_indices(order, r, world), want)


def test_shard_indices_refuse_a_bad_rank_or_world_size():
    with pytest.raises(DataError, match="rank=2"):
        shard_indices(torch.arange(10), 2, 2)
    with pytest.raises(DataError, match="world_size=0"):
        shard_indices(torch.arange(10), 0, 0)


def test_one_process_distributed_learner_is_a_learner():
    torch.manual_seed(0)
    a = Learner(MLP(8, 3, (16,)), toy_data(), batch_size=BATCH, seed=3).fit(2)
    torch.manual_seed(0)
    b = DistributedLearner(MLP(8, 3, (16,)), toy_data(), batch_size=BATCH, seed=3).fit(2)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert a.history == b.history and b.n_batches == a.n_batches == 6


def test_distributed_learner_refuses_bad_arguments(monkeypatch):
    with pytest.raises(DataError, match="batch_size=0"):
        DistributedLearner(MLP(8, 3), toy_data(), batch_size=0)
    with pytest.raises(DataError, match="cuda_graph"):
        DistributedLearner(MLP(8, 3), toy_data(), cuda_graph=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DataError, match="init_distributed"):
        DistributedLearner(MLP(8, 3), toy_data())


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK=-1"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, "MASTER_ADDR"),
])
def test_init_distributed_names_the_bad_environment_variable(monkeypatch, env, message):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(DataError, match=message):
        init_distributed()


def test_init_distributed_in_a_plain_process_is_one_rank(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = init_distributed("gloo")
    assert (info.rank, info.world_size, info.backend) == (0, 1, None)
    assert params_agree(MLP(8, 3))  # nothing to compare with
    with pytest.raises(DataError, match="backend='mpi'"):
        init_distributed("mpi")


def test_rank0_only_picks_the_callbacks_that_write(tmp_path):
    assert rank0_only(Checkpoint(tmp_path)) and not rank0_only(EarlyStopping())
    class Custom(EarlyStopping):
        rank0_only = True
    assert rank0_only(Custom())


def test_launch_command_lines():
    one = launch_command("train.py", ["--epochs", 3], nproc=2)
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "train.py", "--epochs", "3"]
    many = launch_command("train.py", nproc="gpu", nnodes=2, endpoint="node0:29400")
    assert many[many.index("--nnodes") + 1] == "2" and many[many.index("--rdzv-endpoint") + 1] == "node0:29400"
    with pytest.raises(DataError, match="endpoint"):
        launch_command("train.py", nnodes=2)
    with pytest.raises(DataError, match="nproc=0"):
        launch_command("train.py", nproc=0)


def test_launch_refuses_what_torchrun_cannot_run(tmp_path):
    with pytest.raises(DataError, match="target"):
        launch(tmp_path / "missing.py")
    def local(): pass
    with pytest.raises(DataError, match="cannot import"):
        launch(local)


def test_launch_runs_an_importable_function_on_each_rank_and_reports_a_failure(tmp_path):
    (tmp_path / "ranks_mod.py").write_text(
        "import os, torch.distributed as dist\n"
        "def write(folder, fail=False):\n"
        "    if fail: raise ValueError('this rank failed on purpose')\n"
        "    open(f'{folder}/rank{dist.get_rank()}-of-{dist.get_world_size()}', 'w').close()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import ranks_mod
        launch(ranks_mod.write, nproc=2, kwargs={"folder": str(tmp_path)}, env={"PYTHONPATH": str(tmp_path)}, timeout=300)
        assert sorted(p.name for p in tmp_path.glob("rank*-of-*")) == ["rank0-of-2", "rank1-of-2"]
        with pytest.raises(RuntimeError, match="this rank failed on purpose"):
            launch(ranks_mod.write, nproc=1, kwargs={"folder": str(tmp_path), "fail": True},
                   env={"PYTHONPATH": str(tmp_path)}, timeout=300)
    finally:
        sys.path.remove(str(tmp_path))


# ------------------------------------------------------------------------------------------- shared studies

def test_study_storage_urls(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINKIT_DATA", str(tmp_path))
    assert study_storage() == f"sqlite:///{tmp_path / 'tuning.db'}"
    assert study_storage("postgresql://u:p@db:5432/t") == "postgresql+psycopg://u:p@db:5432/t"
    assert study_storage("postgres://u:p@db/t") == "postgresql+psycopg://u:p@db/t"
    assert study_storage("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(DataError, match="url='mysql://"):
        study_storage("mysql://u:p@db/t")
    with pytest.raises(DataError, match="url"):
        study_storage(5)


def test_run_workers_gives_each_its_number_and_reports_a_failure():
    outs = run_workers([sys.executable, "-c", "import os; print(os.environ['WORKER'], os.environ['N_WORKERS'])"], n=3)
    assert [o.split() for o in outs] == [["0", "3"], ["1", "3"], ["2", "3"]]
    with pytest.raises(RuntimeError, match="(?s)worker 1 .*ZeroDivisionError"):
        run_workers([sys.executable, "-c", "import os; 1 / (1 - int(os.environ['WORKER']))"], n=2)
    with pytest.raises(DataError, match="n=0"):
        run_workers(["true"], n=0)


TUNE_WORKER = '''import json, sys
import torch
from trainkit.models import MLP
from trainkit.tune import search
sys.path.insert(0, sys.argv[4])
from test_distributed import toy_data
torch.set_num_threads(1)
mine = []
search(lambda p: MLP(8, 3, (p["width"],)), toy_data(), {"lr": ("log", 1e-3, 1e-1), "width": ("int", 4, 16)},
       n_trials=int(sys.argv[3]), epochs=1, storage=sys.argv[1], study_name=sys.argv[2],
       callbacks=[lambda study, trial: mine.append(trial.number)])
print(json.dumps(mine))
'''


@pytest.fixture(scope="module")
def postgres_url():
    "The test server's URL, reachable; skip (or fail where TRAINKIT_POSTGRES_REQUIRED is set) otherwise."
    url, why = os.environ.get("TRAINKIT_TEST_POSTGRES_URL"), None
    if not url:
        why = "TRAINKIT_TEST_POSTGRES_URL is not set (tools/install-services.sh starts PostgreSQL and prints it)"
    else:
        import sqlalchemy
        try:
            with sqlalchemy.create_engine(study_storage(url)).connect() as c:
                c.execute(sqlalchemy.text("SELECT 1"))
        except Exception as e:
            why = f"no PostgreSQL answers at {url.split('@')[-1]}: {type(e).__name__}: {str(e)[:200]}"
    if why:
        if os.environ.get("TRAINKIT_POSTGRES_REQUIRED"):
            pytest.fail(f"the PostgreSQL test is required here, but: {why}")
        pytest.skip(why)
    return study_storage(url)


def test_two_workers_share_one_study_in_postgresql(postgres_url, tmp_path):
    (tmp_path / "tune_worker.py").write_text(TUNE_WORKER)
    name, n_each = f"trainkit-test-{uuid.uuid4().hex[:8]}", 4
    try:
        outs = run_workers([sys.executable, tmp_path / "tune_worker.py", postgres_url, name, n_each,
                            Path(__file__).parent], n=2, timeout=300)
        ran = [json.loads(o.strip().splitlines()[-1]) for o in outs]
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert len(ran[0]) == len(ran[1]) == n_each
        assert sorted(ran[0] + ran[1]) == list(range(2 * n_each))  # none lost, none run twice
        assert sorted(t.number for t in study.trials) == list(range(2 * n_each))
        assert all(t.state == optuna.trial.TrialState.COMPLETE or t.state == optuna.trial.TrialState.PRUNED
                   for t in study.trials)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=postgres_url)
        except KeyError:
            pass
