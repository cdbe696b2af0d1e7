"""Edge models (trainkit.edge): int8 parity with the fp32 bundle within the stated tolerance, the size
drop on a wide model, every tampering case refused with the file named, and all-or-nothing writes."""
from __future__ import annotations

import builtins
import hashlib
import json
import logging
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("safetensors")

from trainkit.core import DataError  # noqa: E402
from trainkit.datasets import load_datasets  # noqa: E402
from trainkit.edge import MODEL, TOLERANCE, compare, load_edge, parity, quantize  # noqa: E402
from trainkit.export import export, load_bundle  # noqa: E402
from trainkit.learner import Learner  # noqa: E402
from trainkit.models import MLP  # noqa: E402
from trainkit.prep import split  # noqa: E402


def _bundle(data, make_model, epochs, root, lr=1e-2):
    torch.manual_seed(0)  # before the model is built: its initial weights
    return load_bundle(export(Learner(make_model(), data, device="cpu").fit(epochs, lr=lr), root))


# penguin_bundle: the session's penguin MLP bundle (tests/conftest.py); copy its folder before changing it


@pytest.fixture
def valid_records(penguin_learner):
    "The validation split's clean rows (raw columns): the calibration records of `quantize`."
    return penguin_learner.data.rows("valid")


@pytest.fixture
def test_records(penguin_learner):
    return penguin_learner.data.rows("test")


@pytest.fixture(scope="module")
def _edge_master(penguin_bundle, penguin_learner, tmp_path_factory):
    return quantize(penguin_bundle, tmp_path_factory.mktemp("edge") / "penguins-int8", penguin_learner.data.rows("valid"))


@pytest.fixture
def edge_path(_edge_master, tmp_path):
    "A fresh copy of a quantized penguin model, free to tamper with."
    dest = tmp_path / "penguins-int8"
    shutil.copytree(_edge_master, dest)
    return dest


@pytest.fixture(scope="module")
def digits_wide(tmp_path_factory):
    "A wide MLP on digits (about 83,000 weights) and its data."
    data = load_datasets("digits")
    return _bundle(data, lambda: MLP(64, 10, (256, 256)), 1, tmp_path_factory.mktemp("wide"), lr=1e-3), data


def _refused(folder, name):
    with pytest.raises(DataError) as e:
        load_edge(folder)
    assert str(e.value).startswith(f"{name}:"), str(e.value)
    return str(e.value)


def _reseal(folder, edit):
    "Apply `edit` to edge.json and rewrite edge.sha256 to match, as a careful attacker (or a bug) would."
    m = json.loads((folder / "edge.json").read_text())
    edit(m)
    blob = json.dumps(m, indent=1, sort_keys=True).encode()
    (folder / "edge.json").write_bytes(blob)
    (folder / "edge.sha256").write_text(f"{hashlib.sha256(blob).hexdigest()}  edge.json\n")


# -- parity, size, contents ----------------------------------------------------------------------

def test_parity_within_tolerance_on_penguin_test_split(penguin_bundle, test_records, edge_path):
    edge = load_edge(edge_path)
    assert edge.classes == penguin_bundle.classes and edge.task == "classification"
    p8 = edge.predict(test_records)
    np.testing.assert_array_equal(edge.predict(test_records.to_dict("records")), p8)  # records as dicts too
    np.testing.assert_allclose(p8.sum(1), 1, atol=1e-5)
    for engine in ("onnx", "torch"):  # the fp32 graph, and the oracle: the PyTorch model itself
        ref = penguin_bundle.predict(test_records, engine=engine)
        assert np.abs(p8 - ref).max() <= TOLERANCE["max_abs_dp"]
        assert (p8.argmax(1) == ref.argmax(1)).mean() >= TOLERANCE["min_agreement"]
        assert parity(ref, p8)["ok"]
    # not identical: int8 really ran
    assert np.abs(p8 - penguin_bundle.predict(test_records, engine="onnx")).max() > 1e-6


def test_edge_json_describes_source_and_settings(penguin_bundle, edge_path, files_in):
    assert files_in(edge_path) == ["edge.json", "edge.sha256", MODEL, "preprocessor.json"]
    m = json.loads((edge_path / "edge.json").read_text())
    src = penguin_bundle.path
    assert m["source"]["version"] == penguin_bundle.manifest["version"]
    assert m["source"]["manifest_sha256"] == hashlib.sha256((src / "manifest.json").read_bytes()).hexdigest()
    assert (edge_path / "preprocessor.json").read_bytes() == (src / "preprocessor.json").read_bytes()
    assert m["quantization"] | {"per_channel": False, "weight_type": "QInt8", "activation_type": "QUInt8",
                                "integer_ops": ["MatMulInteger"]} == m["quantization"]
    assert m["tolerance"] == TOLERANCE and m["parity"]["ok"] and m["parity"]["records"] > 0
    assert m["input"] == penguin_bundle.manifest["input"] and m["classes"] == penguin_bundle.classes
    for name, f in m["files"].items():
        blob = (edge_path / name).read_bytes()
        assert f == {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}


def test_wide_model_int8_smaller_and_close(digits_wide, tmp_path):
    bundle, data = digits_wide
    edge = load_edge(quantize(bundle, tmp_path / "wide-int8", data.X_valid.numpy()))
    table = compare(bundle, edge, data.X_test.numpy(), y=data.y_test.numpy(), batch_sizes=(1, 8), repeats=5)
    assert list(table.index) == ["fp32", "int8"]
    assert table.loc["int8", "size_bytes"] * 3.5 < table.loc["fp32", "size_bytes"]
    assert table.loc["fp32", "size_bytes"] == bundle.manifest["files"]["model.onnx"]["size"]
    assert table.loc["int8", "size_bytes"] == (edge.path / MODEL).stat().st_size
    assert table.loc["int8", "max_abs_dp"] <= TOLERANCE["max_abs_dp"] and table.loc["int8", "agreement"] >= 0.98
    assert abs(table.loc["int8", "accuracy"] - table.loc["fp32", "accuracy"]) <= 0.02
    assert (table[["latency_b1_us", "latency_b8_us"]] > 0).all().all()
    with pytest.raises(DataError, match="this model takes"):
        edge.predict(data.X_test.flatten(1).numpy())


def test_compare_on_raw_records_and_wrong_bundle(penguin_bundle, digits_wide, test_records, edge_path):
    edge = load_edge(edge_path)
    table = compare(penguin_bundle, edge, test_records, repeats=3)  # labels from the records' target column
    names = compare(penguin_bundle, edge, test_records, y=test_records.species.to_numpy(), repeats=3)
    assert table.accuracy.tolist() == names.accuracy.tolist()
    assert table.loc["fp32", "accuracy"] == (penguin_bundle.predict(test_records).argmax(1) ==
                                             pd.Index(penguin_bundle.classes).get_indexer(test_records.species)).mean()
    with pytest.raises(DataError, match="not classes"):
        compare(penguin_bundle, edge, test_records, y=["Dodo"] * len(test_records), repeats=1)
    with pytest.raises(DataError, match="^edge.json: .* was made from bundle"):
        compare(digits_wide[0], edge, digits_wide[1].X_test.numpy(), y=digits_wide[1].y_test.numpy(), repeats=1)


def test_regression_parity(tmp_path):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    data = load_datasets("diabetes")
    bundle = _bundle(data, lambda: MLP(data.X_train.shape[1], 1, (32,)), 5, tmp_path / "b")
    raw = sklearn_datasets.load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    splits = split(raw, "progression", seed=42)  # the raw records behind load_datasets("diabetes")
    np.testing.assert_array_equal(bundle.inputs(splits.test), data.X_test.numpy())
    edge = load_edge(quantize(bundle, tmp_path / "e", splits.valid))
    check = parity(bundle.predict(splits.test, engine="onnx"), edge.predict(splits.test))
    assert check["ok"] and check["max_rel_dy"] <= TOLERANCE["max_rel_dy"] and edge.meta["parity"]["ok"]
    table = compare(bundle, edge, splits.test, batch_sizes=(1,), repeats=3)  # y from the target column
    assert {"mae", "max_abs_dy", "latency_b1_us"} <= set(table.columns)
    assert table.loc["fp32", "mae"] == pytest.approx(np.abs(bundle.predict(splits.test) - data.y_test.numpy()).mean(), rel=1e-4)


def test_settings_recorded_and_deterministic(penguin_bundle, valid_records, edge_path, tmp_path):
    a = quantize(penguin_bundle.path, tmp_path / "a", valid_records, weight_type="QUInt8", per_channel=True)
    m = json.loads((a / "edge.json").read_text())
    assert m["quantization"]["weight_type"] == "QUInt8" and m["quantization"]["per_channel"] and m["parity"]["ok"]
    assert load_edge(a).predict(valid_records).shape == (len(valid_records), 3)
    b = quantize(penguin_bundle, tmp_path / "b", valid_records)
    assert (b / MODEL).read_bytes() == (edge_path / MODEL).read_bytes()  # same bundle, same settings: same bytes


def test_parity_function_oracle():
    p = np.array([[0.7, 0.3], [0.2, 0.8]])
    assert parity(p, p + [[0.04, -0.04], [0, 0]]) == {"records": 2, "max_abs_dp": pytest.approx(0.04), "agreement": 1.0, "ok": True}
    assert not parity(p, p + [[0.06, -0.06], [0, 0]])["ok"]  # one probability moved too far
    assert not parity(p, p[:, ::-1])["ok"] and parity(p, p[:, ::-1])["agreement"] == 0.0
    assert parity(p, p[:, ::-1], tolerance={"max_abs_dp": 1, "min_agreement": 0})["ok"]
    y = np.array([0.0, 10.0])  # std 5: 5% of it is 0.25
    assert parity(y, y + 0.2)["ok"] and not parity(y, y + 0.3)["ok"]


# -- refusals when quantizing --------------------------------------------------------------------

def test_refuses_to_overwrite(penguin_bundle, valid_records, edge_path, files_in):
    before = {p.name: p.read_bytes() for p in edge_path.iterdir()}
    with pytest.raises(DataError, match="never overwritten"):
        quantize(penguin_bundle, edge_path, valid_records)
    assert {p.name: p.read_bytes() for p in edge_path.iterdir()} == before
    (edge_path.parent / "empty").mkdir()
    with pytest.raises(DataError, match="never overwritten"):
        quantize(penguin_bundle, edge_path.parent / "empty", valid_records)
    assert files_in(edge_path.parent / "empty") == []


@pytest.mark.parametrize("target,exc", [("onnxruntime.quantization.quantize_dynamic", OSError),
                                        ("onnxruntime.InferenceSession", DataError),  # wrapped as "model.onnx: onnxruntime cannot load it"
                                        ("json.dumps", OSError),  # after model.int8.onnx and preprocessor.json
                                        ("os.replace", OSError),  # everything written, the rename fails
                                        ("os.replace", KeyboardInterrupt)])
def test_crash_mid_quantize_leaves_nothing(penguin_bundle, valid_records, tmp_path, monkeypatch, files_in, target, exc):
    (tmp_path / "keep").mkdir()
    filters = list(logging.getLogger().filters)

    seen = []

    def boom(*a, **k):
        seen.extend(p.name for p in tmp_path.rglob("*"))  # what was on disk when it crashed
        raise exc("disk on fire")
    monkeypatch.setattr(target, boom)
    with pytest.raises(exc, match="disk on fire"):
        quantize(penguin_bundle, tmp_path / "edge", valid_records)
    monkeypatch.undo()
    if target in ("json.dumps", "os.replace"):  # the crash came with partial files in the temporary folder
        assert {MODEL, "preprocessor.json"} <= set(seen) and ("edge.json" in seen) == (target == "os.replace")
    assert files_in(tmp_path) == ["keep"]  # no destination, no hidden temporary folder, no stray file
    assert logging.getLogger().filters == filters  # the log filter is removed whatever happens


def test_parity_failure_writes_nothing(penguin_bundle, valid_records, tmp_path, files_in):
    with pytest.raises(DataError, match=f"^{MODEL}: int8 outputs are outside the tolerance"):
        quantize(penguin_bundle, tmp_path / "edge", valid_records, tolerance={"max_abs_dp": 1e-7})
    assert files_in(tmp_path) == []


def test_bad_inputs_refused(penguin_bundle, valid_records, edge_path, tmp_path, files_in):
    (tmp_path / "not-a-bundle").mkdir()
    (tmp_path / "not-a-bundle" / "model.onnx").write_bytes(b"x")
    with pytest.raises(DataError, match="^manifest.sha256: missing"):
        quantize(tmp_path / "not-a-bundle", tmp_path / "e1", valid_records)
    with pytest.raises(DataError, match="No bundle folder"):
        quantize(tmp_path / "nowhere", tmp_path / "e2", valid_records)
    with pytest.raises(DataError, match="^manifest.sha256: missing"):
        quantize(edge_path, tmp_path / "e3", valid_records)  # an edge model is not a bundle
    with pytest.raises(DataError, match="weight_type="):
        quantize(penguin_bundle, tmp_path / "e4", valid_records, weight_type="int4")
    with pytest.raises(DataError, match="no Conv weights were quantized"):
        quantize(penguin_bundle, tmp_path / "e5", valid_records, op_types=("Conv",))
    with pytest.raises(DataError, match=r"lack the feature\(s\) \['island'\]"):
        quantize(penguin_bundle, tmp_path / "e6", valid_records.drop(columns="island"))
    assert files_in(tmp_path) == ["not-a-bundle", "penguins-int8"]


def test_no_records_refused(digits_wide, tmp_path, files_in):
    with pytest.raises(DataError, match="^records: no records"):
        quantize(digits_wide[0], tmp_path / "edge", np.zeros((0, 1, 8, 8), np.float32))
    assert files_in(tmp_path) == []


def test_tampered_bundle_refused_before_writing(penguin_bundle, valid_records, tmp_path, files_in):
    src = tmp_path / "bundle"
    shutil.copytree(penguin_bundle.path, src)
    b = bytearray((src / "model.onnx").read_bytes())
    b[len(b) // 2] ^= 1
    (src / "model.onnx").write_bytes(bytes(b))
    with pytest.raises(DataError, match="^model.onnx: its sha256"):
        quantize(src, tmp_path / "edge", valid_records)
    loaded = load_bundle(penguin_bundle.path)
    (tmp_path / "b2").mkdir()
    shutil.copytree(penguin_bundle.path, tmp_path / "b2" / "v1")
    loaded.path = tmp_path / "b2" / "v1"  # a bundle whose folder changes after it was loaded
    (loaded.path / "preprocessor.json").write_text("{}")
    with pytest.raises(DataError, match="^preprocessor.json:"):
        quantize(loaded, tmp_path / "edge", valid_records)
    assert files_in(tmp_path) == ["b2", "bundle"]


# -- refusals when loading -----------------------------------------------------------------------

def test_flipped_byte_refused(edge_path):
    b = bytearray((edge_path / MODEL).read_bytes())
    b[len(b) // 2] ^= 0x10
    (edge_path / MODEL).write_bytes(bytes(b))
    assert "sha256 does not match" in _refused(edge_path, MODEL)


@pytest.mark.parametrize("name", [MODEL, "preprocessor.json"])
def test_truncated_file_refused(edge_path, name):
    blob = (edge_path / name).read_bytes()
    (edge_path / name).write_bytes(blob[:-1])
    assert "truncated" in _refused(edge_path, name)


@pytest.mark.parametrize("name", [MODEL, "preprocessor.json", "edge.json", "edge.sha256"])
def test_missing_file_refused(edge_path, name):
    (edge_path / name).unlink()
    _refused(edge_path, name)


@pytest.mark.parametrize("name", ["model.onnx", "model.pkl", ".hidden"])
def test_extra_file_refused(edge_path, name):
    (edge_path / name).write_bytes(b"extra")
    assert "not part of the edge model" in _refused(edge_path, name)


@pytest.mark.parametrize("edit", ["tolerance", "classes", "size"])
def test_edited_edge_json_refused(edge_path, edit):
    m = json.loads((edge_path / "edge.json").read_text())
    if edit == "tolerance":
        m["tolerance"]["max_abs_dp"] = 1.0
    elif edit == "classes":
        m["classes"] = m["classes"][::-1]
    else:
        m["files"][MODEL]["size"] += 1
    (edge_path / "edge.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    assert "edited after it was sealed" in _refused(edge_path, "edge.json")


def test_resealed_edge_json_still_checked(edge_path):
    _reseal(edge_path, lambda m: m["files"].update({"model.pkl": {"sha256": "0" * 64, "size": 1}}))
    assert "lists ['model.pkl']" in _refused(edge_path, "edge.json")
    _reseal(edge_path, lambda m: m["files"].pop("model.pkl"))
    _reseal(edge_path, lambda m: m["files"].pop(MODEL))
    (edge_path / MODEL).unlink()
    assert f"no {MODEL}" in _refused(edge_path, "edge.json")


def test_resealed_malformed_entry_and_format(edge_path):
    good = json.loads((edge_path / "edge.json").read_text())["files"]
    _reseal(edge_path, lambda m: m["files"].update({MODEL: "trust me"}))
    assert f"{MODEL} needs an integer size" in _refused(edge_path, "edge.json")
    _reseal(edge_path, lambda m: m.update(format={"name": "trainkit-edge", "version": 99}))
    assert "not a trainkit-edge version 1" in _refused(edge_path, "edge.json")
    _reseal(edge_path, lambda m: m.update(format={"name": "trainkit-edge", "version": 1}, files=good))
    _reseal(edge_path, lambda m: m.pop("task"))
    assert "has no ['task']" in _refused(edge_path, "edge.json")


class _Payload:
    "Unpickling this would create the marker file."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("name,reseal", [(MODEL, False), (MODEL, True), ("preprocessor.json", True)])
def test_malicious_pickle_never_executed(edge_path, tmp_path, monkeypatch, name, reseal):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    for mod, fn in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(mod, fn, lambda *a, **k: pytest.fail("something tried to unpickle"))
    (edge_path / name).write_bytes(evil)
    if reseal:
        _reseal(edge_path, lambda m: m["files"].update({name: {"sha256": hashlib.sha256(evil).hexdigest(), "size": len(evil)}}))
    msg = _refused(edge_path, name)
    if reseal and name == MODEL:
        assert "onnxruntime cannot load it" in msg
    assert not marker.exists()


def test_not_an_edge_model(penguin_bundle, tmp_path):
    with pytest.raises(DataError, match="^edge.sha256: missing"):
        load_edge(penguin_bundle.path)
    with pytest.raises(DataError, match="No edge model folder"):
        load_edge(tmp_path / "nowhere")


def test_symlink_refused(edge_path, tmp_path):
    target = tmp_path / "elsewhere.onnx"
    shutil.move(edge_path / MODEL, target)
    (edge_path / MODEL).symlink_to(target)
    _refused(edge_path, MODEL)
