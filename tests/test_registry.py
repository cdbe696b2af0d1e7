"""Registry (trainkit.registry): add/list/promote/rollback/load round trip, tampered versions refused
with the pointer kept, crashes in the middle of add or promote leaving the previous good state, and
a DataError naming the version or file for every bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")

import trainkit.core  # noqa: E402
import trainkit.export  # noqa: E402
import trainkit.registry  # noqa: E402
from trainkit.core import DataError  # noqa: E402
from trainkit.evaluate import evaluate  # noqa: E402
from trainkit.export import export, load_bundle  # noqa: E402
from trainkit.learner import Learner  # noqa: E402
from trainkit.models import MLP  # noqa: E402
from trainkit.registry import Registry, git_commit  # noqa: E402


@pytest.fixture(scope="module")
def learners(penguin_learner):
    """Two penguin MLPs trained with different settings, with validation reports (built once): a tiny one of its own
    (hidden (4,), lr 1e-3) and the session's penguin MLP (hidden (32,), lr 1e-2; tests/conftest.py)."""
    data = penguin_learner.data
    torch.manual_seed(0)
    tiny = Learner(MLP(data.X_train.shape[1], data.n_classes, (4,)), data, device="cpu").fit(2, lr=1e-3)
    return [(learn, evaluate(learn, data, "valid")) for learn in (tiny, penguin_learner)]


@pytest.fixture(scope="module")
def _filled(learners, tmp_path_factory):
    "A registry with v1 and v2 added (no promotion), built once and copied per test."
    reg = Registry(tmp_path_factory.mktemp("reg") / "registry")
    for learn, report in learners:
        reg.add(learn, report=report)
    return reg.root


@pytest.fixture
def reg(_filled, tmp_path):
    shutil.copytree(_filled, tmp_path / "registry")
    return Registry(tmp_path / "registry")


def flip_bit(path):
    b = bytearray(path.read_bytes())
    b[-5] ^= 1
    path.write_bytes(bytes(b))


def test_round_trip(reg, learners):
    assert reg.names() == ["v1", "v2"] and reg.current() is None
    assert reg.promote("v1") == "v1" and reg.current() == "v1"
    reg.promote("v2")
    assert reg.current() == "v2"
    assert reg.load().path.name == "v2" and reg.load("v1").path.name == "v1"
    assert reg.load().manifest["metrics"]["accuracy"] == pytest.approx(learners[1][1].metrics["accuracy"])
    assert reg.rollback() == "v1" and reg.current() == "v1"
    with pytest.raises(DataError, match="no earlier one"):
        reg.rollback()
    hist = reg.history()
    assert list(hist.action) == ["promote", "promote", "rollback"] and list(hist.version) == ["v1", "v2", "v1"]
    assert (reg.root / "CURRENT").read_text().strip() == "v1" and not (reg.root / "CURRENT").is_symlink()


def test_rollback_is_a_stack(reg, learners):
    reg.add(learners[0][0], version="v3")
    for v in ("v1", "v2", "v3"):
        reg.promote(v)
    assert [reg.rollback(), reg.rollback()] == ["v2", "v1"]
    reg.promote("v3")
    assert reg.rollback() == "v1"


def test_versions_compares_metrics_and_lineage(reg, learners):
    reg.promote("v2")
    t = reg.versions()
    assert list(t.index) == ["v1", "v2"] and list(t.current) == [False, True]
    for v, (learn, report) in zip(t.index, learners):
        assert t.loc[v, "accuracy"] == pytest.approx(report.metrics["accuracy"])
        assert t.loc[v, "lr"] == learn.lr
    assert t.loc["v1", "model"] == "MLP[4]" and t.loc["v2", "model"] == "MLP[32]"
    assert t.data_sha256.nunique() == 1 and len(t.data_sha256.iloc[0]) == 12
    assert t.loc["v1", "trainkit"] == trainkit.__version__ and set(t.metrics_from) == {"report:valid"}
    assert t.loc["v1", "parent"] is None
    assert reg.add(learners[0][0]) == "v3" and reg.versions().loc["v3", "parent"] == "v2"  # default parent: current


def test_add_copies_a_verified_bundle(reg, learners, tmp_path):
    src = export(learners[0][0], tmp_path / "elsewhere")
    assert reg.add(src, version="from-disk", parent="v1") == "from-disk"
    assert reg.load("from-disk").manifest["training_data_sha256"] == load_bundle(src).manifest["training_data_sha256"]
    assert reg.versions().loc["from-disk", "parent"] == "v1"
    flip_bit(src / "weights.safetensors")
    with pytest.raises(DataError, match="weights.safetensors"):
        reg.add(src, version="bad")
    assert "bad" not in reg.names() and not (reg.root / "versions" / "bad").exists()


def test_promote_refuses_tampered_version(reg):
    reg.promote("v1")
    flip_bit(reg.root / "versions" / "v2" / "weights.safetensors")
    with pytest.raises(DataError, match=r"promote v2: refused.*weights.safetensors.*CURRENT stays v1"):
        reg.promote("v2")
    (reg.root / "versions" / "v1" / "model.pkl").write_bytes(b"\x80\x04.")
    assert reg.current() == "v1"
    with pytest.raises(DataError, match="model.pkl"):
        reg.load()  # load verifies too
    (reg.root / "versions" / "v1" / "model.pkl").unlink()
    assert reg.load().path.name == "v1" and list(reg.history().version) == ["v1"]


def test_rollback_refuses_tampered_target(reg):
    reg.promote("v1")
    reg.promote("v2")
    flip_bit(reg.root / "versions" / "v1" / "model.onnx")
    with pytest.raises(DataError, match="rollback v1: refused.*model.onnx"):
        reg.rollback()
    assert reg.current() == "v2"


@pytest.mark.parametrize("where", ["CURRENT", "history", "os.replace"])
def test_crash_in_promote_keeps_previous(reg, monkeypatch, where):
    reg.promote("v1")
    real_aw, real_replace = trainkit.registry.atomic_write, trainkit.core.os.replace

    def aw(path, *a, **k):
        if path.name == ("CURRENT" if where == "CURRENT" else "history.jsonl"):
            raise OSError("disk full")
        return real_aw(path, *a, **k)

    def replace(src, dst):
        raise OSError("power cut")

    if where == "os.replace":
        monkeypatch.setattr(trainkit.core.os, "replace", replace)
    else:
        monkeypatch.setattr(trainkit.registry, "atomic_write", aw)
    with pytest.raises(OSError):
        reg.promote("v2")
    monkeypatch.setattr(trainkit.registry, "atomic_write", real_aw)
    monkeypatch.setattr(trainkit.core.os, "replace", real_replace)
    assert reg.current() == "v1" and reg.load().path.name == "v1"
    assert not [p for p in reg.root.iterdir() if p.name.endswith(".tmp")]
    # a history line written before the crash is never taken for a promotion that happened
    with pytest.raises(DataError, match="no earlier one"):
        reg.rollback()
    reg.promote("v2")
    assert reg.rollback() == "v1"


def test_crash_in_add_lists_no_half_version(reg, learners, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(trainkit.export, "_onnx_bytes", boom)
    with pytest.raises(RuntimeError):
        reg.add(learners[0][0])
    monkeypatch.undo()
    real_aw = trainkit.registry.atomic_write

    def aw(path, *a, **k):
        if path.parent.name == "records":
            raise OSError("disk full")
        return real_aw(path, *a, **k)

    monkeypatch.setattr(trainkit.registry, "atomic_write", aw)
    with pytest.raises(OSError):
        reg.add(learners[0][0])
    monkeypatch.undo()
    assert reg.names() == ["v1", "v2"] and list(reg.versions().index) == ["v1", "v2"]
    assert sorted(p.name for p in (reg.root / "versions").iterdir()) == ["v1", "v2"]
    # a process killed after the bundle landed but before its record: not listed, name not reused
    shutil.copytree(reg.root / "versions" / "v2", reg.root / "versions" / "v3")
    assert reg.names() == ["v1", "v2"]
    with pytest.raises(DataError, match="Unknown version 'v3'"):
        reg.promote("v3")
    assert reg.add(learners[0][0]) == "v4"


def test_bad_inputs(reg, learners, tmp_path):
    empty = Registry(tmp_path / "empty")
    assert empty.current() is None and empty.versions().empty and empty.names() == []
    for call in (lambda: empty.promote("v1"), empty.load, lambda: empty.load("v1")):
        with pytest.raises(DataError, match="holds no versions"):
            call()
    with pytest.raises(DataError, match="nothing has been promoted"):
        empty.rollback()
    with pytest.raises(DataError, match=r"Unknown version 'v9'.*v1, v2"):
        reg.promote("v9")
    with pytest.raises(DataError, match="no version has been promoted"):
        reg.load()
    with pytest.raises(DataError, match="nothing has been promoted"):
        reg.rollback()
    with pytest.raises(DataError, match="already exists"):
        reg.add(learners[0][0], version="v1")
    with pytest.raises(DataError, match="version='../x'"):
        reg.add(learners[0][0], version="../x")
    with pytest.raises(DataError, match="Unknown version 'nope'"):
        reg.add(learners[0][0], parent="nope")
    with pytest.raises(DataError, match="No bundle folder"):
        reg.add(tmp_path / "missing")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        Registry(tmp_path / "afile")
    for junk in ("v7\n", "../../etc/passwd", "\x00\xff"):
        (reg.root / "CURRENT").write_text(junk)
        with pytest.raises(DataError, match="CURRENT: holds"):
            reg.current()
        assert "current=None" in repr(reg)
    reg.promote("v1")  # promoting repairs a corrupted pointer
    assert reg.current() == "v1"
    with open(reg.root / "history.jsonl", "a") as f:
        f.write("not json\n")
    with pytest.raises(DataError, match="history.jsonl: line 2"):
        reg.rollback()
    (reg.root / "records" / "v2.json").write_text("{")
    with pytest.raises(DataError, match="records/v2.json: unreadable"):
        reg.versions()


def test_git_commit(tmp_path):
    assert git_commit(cwd=tmp_path) is None
    assert git_commit(cwd=tmp_path / "does-not-exist") is None
    sha = git_commit()
    assert sha is None or len(sha) == 40
    json.dumps(sha)


# ------------------------------------------------------------------------------------------ two writers

WORKER = Path(__file__).with_name("registry_worker.py")


def test_two_writers_adding_and_promoting_at_once_lose_nothing(penguin_bundle, tmp_path):
    "Two real processes each add and promote 8 versions into one registry at the same moment: all 16 are there, intact."
    root, go, n = tmp_path / "registry", tmp_path / "go", 8
    Registry(root).add(penguin_bundle.path)  # v1 exists before the race starts
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(root), str(penguin_bundle.path), name, str(n), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    time.sleep(1.0)  # both have imported trainkit and are waiting
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    added = [json.loads(line)["version"] for out, _ in outs for line in out.splitlines()]
    reg = Registry(root)
    assert len(added) == 2 * n and len(set(added)) == 2 * n  # no name handed out twice
    assert sorted(reg.names(), key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 2 * n + 2)]
    assert reg.versions().verified.all()  # every version's files match its manifest
    for v in reg.names():
        load_bundle(reg.root / "versions" / v)
    history = reg.history()
    assert (history.action == "promote").sum() == 2 * n  # no promotion's history line lost
    assert sorted(history.version) == sorted(added)
    assert reg.current() == history.version.iloc[-1]  # CURRENT is the last promotion the history records
    records = [json.loads((root / "records" / f"{v}.json").read_text())["seq"] for v in reg.names()]
    assert sorted(records) == list(range(1, 2 * n + 2))  # sequence numbers unique
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".")]  # no staging folder left


def test_versions_flags_a_version_that_fails_verification(reg):
    flip_bit(reg.root / "versions" / "v2" / "weights.safetensors")
    (reg.root / "versions" / "v1" / "model.pkl").write_bytes(b"\x80\x04.")
    table = reg.versions()
    assert table.verified.to_dict() == {"v1": False, "v2": False}
    assert table.loc["v2", "problem"].startswith("weights.safetensors: its sha256")
    assert table.loc["v1", "problem"].startswith("model.pkl: not part of the bundle")
    shutil.rmtree(reg.root / "versions" / "v1")
    reg.root.joinpath("versions", "v1").mkdir()  # an emptied folder: listed, not verified, no crash
    assert reg.versions().loc["v1", "problem"].startswith("manifest.sha256: missing")


def test_the_lock_serialises_writers_in_threads_too(reg):
    "While one holder has the lock, a promote from another thread waits for it."
    import threading
    done = []
    with reg.lock():
        t = threading.Thread(target=lambda: done.append(reg.promote("v1")))
        t.start()
        time.sleep(0.5)
        assert done == [] and reg.current() is None  # still waiting
    t.join(10)
    assert done == ["v1"] and reg.current() == "v1"
