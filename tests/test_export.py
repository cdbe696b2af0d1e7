"""Bundles (trainkit.export): round trip and parity (notebook model, loaded torch model, ONNX Runtime),
predictions on raw records, and every tampering case refused with the file named, nothing unpickled."""
from __future__ import annotations

import builtins
import hashlib
import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")

import safetensors.torch  # noqa: E402

from conftest import PENGUIN_EPOCHS  # noqa: E402
from trainkit.core import DataError  # noqa: E402
from trainkit.datasets import load_datasets  # noqa: E402
from trainkit.evaluate import evaluate  # noqa: E402
from trainkit.export import export, load_bundle  # noqa: E402
from trainkit.learner import Learner  # noqa: E402
from trainkit.models import CNN, LinearModel  # noqa: E402

# penguin_learner and penguin_bundle: the session's penguin MLP and its bundle (tests/conftest.py)


@pytest.fixture(scope="module")
def digits_learner():
    torch.manual_seed(0)
    data = load_datasets("digits")
    return Learner(CNN(10, (4, 8)), data, device="cpu").fit(1, lr=1e-2)


@pytest.fixture
def penguin_test_records(penguin_learner):
    "The test split's clean rows (raw columns, target and ids included): what a bundle predicts on."
    return penguin_learner.data.rows("test")


@pytest.fixture
def bundle_path(penguin_bundle, tmp_path):
    "A fresh copy of the shared penguin bundle, free to tamper with."
    return Path(shutil.copytree(penguin_bundle.path, tmp_path / "bundles" / penguin_bundle.path.name))


def _reseal(folder, name, blob):
    "Write `blob` as `name` and update the manifest and its sidecar, as a careful attacker (or a bug) would."
    (folder / name).write_bytes(blob)
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    mb = json.dumps(m, indent=1, sort_keys=True).encode()
    (folder / "manifest.json").write_bytes(mb)
    (folder / "manifest.sha256").write_text(f"{hashlib.sha256(mb).hexdigest()}  manifest.json\n")


def _refused(folder, name):
    with pytest.raises(DataError) as e:
        load_bundle(folder)
    assert str(e.value).startswith(f"{name}:"), str(e.value)
    return str(e.value)


# -- round trip and parity -----------------------------------------------------------------------

def test_mlp_round_trip_parity_on_raw_records(penguin_learner, penguin_test_records, bundle_path):
    b = load_bundle(bundle_path)
    assert not b.model.training and b.classes == penguin_learner.data.classes
    notebook = penguin_learner.predict(penguin_learner.data.X_test).numpy()
    np.testing.assert_allclose(b.predict(penguin_test_records), notebook, atol=1e-5)
    np.testing.assert_allclose(b.predict(penguin_test_records, engine="onnx"), notebook, atol=1e-5)
    # raw records as a list of dicts give the same inputs as the notebook's preprocessing
    records = penguin_test_records.to_dict("records")
    np.testing.assert_array_equal(b.inputs(records), penguin_learner.data.X_test.cpu().numpy())
    np.testing.assert_allclose(b.predict(records[:1], engine="onnx"), notebook[:1], atol=1e-5)  # dynamic batch
    for k, v in penguin_learner.model.state_dict().items():
        assert torch.equal(b.model.state_dict()[k], v.cpu())


def test_cnn_round_trip_parity(digits_learner, tmp_path):
    b = load_bundle(export(digits_learner, tmp_path))
    assert b.preprocessor is None and "preprocessor.json" not in b.manifest["files"]
    X = digits_learner.data.X_test
    notebook = digits_learner.predict(X).numpy()
    np.testing.assert_allclose(b.predict(X), notebook, atol=1e-5)
    np.testing.assert_allclose(b.predict(X.numpy(), engine="onnx"), notebook, atol=1e-5)
    with pytest.raises(DataError, match="this model takes"):
        b.predict(X.flatten(1))


def test_linear_model_round_trip(penguin_learner, penguin_test_records, tmp_path):
    data = penguin_learner.data
    learn = Learner(LinearModel(data.X_train.shape[1], data.n_classes), data, device="cpu").fit(1, lr=1e-2)
    b = load_bundle(export(learn, tmp_path))
    for engine in ("torch", "onnx"):
        np.testing.assert_allclose(b.predict(penguin_test_records, engine), learn.predict(data.X_test).numpy(), atol=1e-5)
    assert b.manifest["model"] == {"class": "LinearModel", "args": {"n_in": data.X_train.shape[1], "n_out": 3}}


def test_manifest_contents(penguin_learner, tmp_path):
    data = penguin_learner.data
    report = evaluate(penguin_learner, data, "valid")
    path = export(penguin_learner, tmp_path, report=report, version="2024.1")
    m = json.loads((path / "manifest.json").read_text())
    assert path.name == "2024.1" and m["format"] == {"name": "trainkit-bundle", "version": 1}
    assert set(m["created_with"]) == {"trainkit", "torch", "python"}
    assert m["model"]["class"] == "MLP" and m["model"]["args"]["hidden"] == [32]
    assert m["metrics"]["source"] == "report:valid" and m["metrics"]["accuracy"] == report.metrics["accuracy"]
    assert m["hyperparameters"] == {**m["hyperparameters"], "epochs": PENGUIN_EPOCHS, "lr": 1e-2, "batch_size": 64}
    cols = {c["name"]: c for c in m["input"]["columns"]}
    assert cols["island"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert cols["culmen_length_mm"]["min"] == data.profile["culmen_length_mm"]["min"]
    assert m["classes"] == data.classes and m["profile"] == json.loads(json.dumps(data.profile))
    h = hashlib.sha256(data.X_train.numpy().tobytes() + data.y_train.numpy().tobytes()).hexdigest()
    assert m["training_data_sha256"] == h
    for name, f in m["files"].items():
        blob = (path / name).read_bytes()
        assert f == {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    assert (path / "manifest.sha256").read_text().split()[0] == hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    m2 = json.loads((export(penguin_learner, tmp_path) / "manifest.json").read_text())
    assert m2["metrics"] == {"source": "history", **json.loads(json.dumps(penguin_learner.history[-1]))}


def test_versions_never_overwritten(penguin_learner, tmp_path, files_in):
    first = export(penguin_learner, tmp_path)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    assert first.name == "v1" and export(penguin_learner, tmp_path).name == "v2"
    with pytest.raises(DataError, match="never overwritten"):
        export(penguin_learner, tmp_path, version="v1")
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert files_in(tmp_path) == ["v1", "v2"]
    with pytest.raises(DataError, match="version="):
        export(penguin_learner, tmp_path, version="../escape")


def test_unsupported_model_refused(penguin_learner, tmp_path):
    learn = Learner(torch.nn.Sequential(torch.nn.Linear(penguin_learner.data.X_train.shape[1], 3)),
                    penguin_learner.data, device="cpu")
    with pytest.raises(DataError, match="export supports MLP, CNN, LinearModel"):
        export(learn, tmp_path)


# -- crash mid-export ----------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["torch.onnx.export", "safetensors.torch.save"])
def test_crash_mid_export_leaves_nothing(penguin_learner, tmp_path, monkeypatch, files_in, target):
    good = export(penguin_learner, tmp_path)

    def boom(*a, **k):
        raise OSError("disk on fire")
    monkeypatch.setattr(target, boom)
    with pytest.raises(OSError, match="disk on fire"):
        export(penguin_learner, tmp_path)
    assert files_in(tmp_path) == [good.name]  # no v2, no hidden temp folder or file
    load_bundle(good)


# -- tampering -----------------------------------------------------------------------------------

def test_flipped_bit_refused(bundle_path):
    b = bytearray((bundle_path / "weights.safetensors").read_bytes())
    b[len(b) // 2] ^= 0x10
    (bundle_path / "weights.safetensors").write_bytes(bytes(b))
    assert "sha256 does not match" in _refused(bundle_path, "weights.safetensors")


@pytest.mark.parametrize("name", ["model.onnx", "preprocessor.json", "weights.safetensors"])
def test_truncated_file_refused(bundle_path, name):
    blob = (bundle_path / name).read_bytes()
    (bundle_path / name).write_bytes(blob[: len(blob) // 2])
    assert "truncated" in _refused(bundle_path, name)


def test_renamed_tensor_key_refused(bundle_path):
    state = safetensors.torch.load((bundle_path / "weights.safetensors").read_bytes())
    state["net.9.weight"] = state.pop("net.1.weight")
    _reseal(bundle_path, "weights.safetensors", safetensors.torch.save(state))
    assert "do not fit the MLP" in _refused(bundle_path, "weights.safetensors")


def test_renamed_tensor_key_caught_by_hash(bundle_path):
    "Without resealing the manifest, the file's hash catches the rename first."
    state = safetensors.torch.load((bundle_path / "weights.safetensors").read_bytes())
    state["net.1.weights"] = state.pop("net.1.weight")
    (bundle_path / "weights.safetensors").write_bytes(safetensors.torch.save(state))
    _refused(bundle_path, "weights.safetensors")


@pytest.mark.parametrize("claimed", [2**40, 200 * 2**20])
def test_oversized_header_refused_before_safetensors(bundle_path, monkeypatch, claimed):
    blob = (bundle_path / "weights.safetensors").read_bytes()
    _reseal(bundle_path, "weights.safetensors", struct.pack("<Q", claimed) + blob[8:])
    monkeypatch.setattr(safetensors.torch, "load", lambda *a, **k: pytest.fail("safetensors was asked to parse it"))
    assert "header claims" in _refused(bundle_path, "weights.safetensors")


def test_header_over_the_cap_refused(bundle_path, monkeypatch):
    "A header that fits in the file but exceeds the cap is refused too (a small cap stands in for 100 MB)."
    import trainkit.export as tx
    monkeypatch.setattr(tx, "MAX_HEADER", 16)
    monkeypatch.setattr(safetensors.torch, "load", lambda *a, **k: pytest.fail("safetensors was asked to parse it"))
    assert "header claims" in _refused(bundle_path, "weights.safetensors")


@pytest.mark.parametrize("edit", ["metric", "classes", "files"])
def test_edited_manifest_refused(bundle_path, edit):
    m = json.loads((bundle_path / "manifest.json").read_text())
    if edit == "metric":
        m["metrics"]["valid_loss"] = -1.0
    elif edit == "classes":
        m["classes"] = m["classes"][::-1]
    else:
        m["files"]["model.onnx"]["size"] += 1
    (bundle_path / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    assert "edited" in _refused(bundle_path, "manifest.json")


def test_manifest_listing_foreign_file_refused(bundle_path):
    (bundle_path / "model.pkl").write_bytes(b"x")
    _reseal(bundle_path, "model.pkl", b"x")
    assert "the bundle folder may hold only" in _refused(bundle_path, "manifest.json")


def test_resealed_malformed_manifest_entry_refused(bundle_path):
    m = json.loads((bundle_path / "manifest.json").read_text())
    m["files"]["model.onnx"] = "trust me"
    mb = json.dumps(m).encode()
    (bundle_path / "manifest.json").write_bytes(mb)
    (bundle_path / "manifest.sha256").write_text(hashlib.sha256(mb).hexdigest())
    assert "model.onnx needs an integer size" in _refused(bundle_path, "manifest.json")


@pytest.mark.parametrize("name", ["model.onnx", "preprocessor.json", "manifest.sha256", "manifest.json"])
def test_missing_file_refused(bundle_path, name):
    (bundle_path / name).unlink()
    _refused(bundle_path, name)


@pytest.mark.parametrize("name", ["model.pkl", "notes.txt", ".hidden"])
def test_extra_file_refused(bundle_path, name):
    (bundle_path / name).write_bytes(b"extra")
    assert "not part of the bundle" in _refused(bundle_path, name)


class _Payload:
    "Unpickling this would create the marker file."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("name,reseal", [("weights.safetensors", False), ("weights.safetensors", True),
                                         ("model.onnx", False), ("model.onnx", True),
                                         ("preprocessor.json", True), ("manifest.json", False)])
def test_malicious_pickle_never_executed(bundle_path, tmp_path, monkeypatch, name, reseal):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    for mod, fn in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(mod, fn, lambda *a, **k: pytest.fail("something tried to unpickle"))
    if reseal:
        _reseal(bundle_path, name, evil)
    else:
        (bundle_path / name).write_bytes(evil)
    b = None
    try:
        b = load_bundle(bundle_path)
    except DataError as e:
        assert str(e).startswith(f"{name}:"), str(e)
    if b is not None:  # only model.onnx, resealed, is parsed lazily: by onnxruntime, which must refuse it
        with pytest.raises(DataError, match="^model.onnx:"):
            b.onnx_session()
    assert not marker.exists()


def test_symlink_refused(bundle_path, tmp_path):
    target = tmp_path / "elsewhere.onnx"
    shutil.move(bundle_path / "model.onnx", target)
    (bundle_path / "model.onnx").symlink_to(target)
    _refused(bundle_path, "model.onnx")
