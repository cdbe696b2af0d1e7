"""The REST service (trainkit.serve): parity over HTTP, strict validation (4xx, never 500, for malformed
requests), the API key, readiness, reloads on promotion under load, crashes mid-promotion, metrics, drift
and the `trainkit serve` command."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from serving import another_model, cli_server, make_registry, records, request, wait_ready
from test_deploy_files import contract_problems
from trainkit.core import DataError
from trainkit.export import export, load_bundle
from trainkit.registry import Registry
from trainkit.predictor import Encoder, load_served, record_model
from trainkit.serve import HTTPError, Service, background, create_app


@pytest.fixture
def learner(penguin_learner):
    "The session's penguin MLP (tests/conftest.py)."
    return penguin_learner


@pytest.fixture
def test_df(learner):
    "The test split's clean rows (raw columns), as the learner's data kept them."
    return learner.data.rows("test")


@pytest.fixture
def reg(tmp_path, learner):
    return make_registry(tmp_path / "registry", learner)


@pytest.fixture
def columns(reg):
    return [c["name"] for c in reg.manifest("v1")["input"]["columns"]]


@pytest.fixture
def rows(test_df, columns):
    return records(test_df, columns)


@pytest.fixture
def client(reg):
    with TestClient(create_app(reg, poll=0.05)) as c:
        yield c


def probs(answers, classes):
    return np.array([[a["probabilities"][c] for c in classes] for a in answers])


# ------------------------------------------------------------------------------------------ parity

def test_http_predictions_equal_the_notebook_model(client, learner, rows, reg):
    "The test split as raw JSON records: /predict/batch and /predict give the Learner's probabilities to 1e-5."
    expected = learner.predict(learner.data.X_test).numpy()
    classes = reg.manifest("v1")["classes"]
    r = client.post("/predict/batch", json={"instances": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == "v1" and len(body["predictions"]) == len(rows)
    np.testing.assert_allclose(probs(body["predictions"], classes), expected, atol=1e-5)
    single = [client.post("/predict", json=row).json() for row in rows[:10]]
    np.testing.assert_allclose(probs(single, classes), expected[:10], atol=1e-5)
    assert [s["prediction"] for s in single] == [classes[i] for i in expected[:10].argmax(1)]
    assert client.post("/invocations", json={"instances": rows[:3]}).json()["predictions"] == body["predictions"][:3]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_encoder_equals_preprocessor_on_generated_records(reg, data):
    "Oracle: the hand-written Encoder gives Preprocessor.transform's numbers for any record the schema accepts."
    bundle = reg.load()
    schema = bundle.manifest["input"]
    record_model(schema)  # the same schema the service validates with
    row = {}
    for col in schema["columns"]:
        if col["dtype"] == "float":
            span = col["max"] - col["min"]
            value = st.floats(col["min"] - span, col["max"] + span, allow_nan=False)
        else:
            value = st.sampled_from(col["categories"])
        row[col["name"]] = data.draw(st.none() | value if col["nullable"] else value, label=col["name"])
    import pandas as pd
    frame = pd.DataFrame([row]).astype({c["name"]: float for c in schema["columns"] if c["dtype"] == "float"})
    np.testing.assert_allclose(Encoder(bundle)([row]), bundle.inputs(frame), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ bad input

def _malformed(record: dict) -> list[tuple[str, str, object, int, str | None]]:
    """(name, path, body, expected status, a field the detail must name). Bodies are bytes (sent as they are)
    or JSON-able values."""
    r = record
    nan = json.dumps({**r, "culmen_length_mm": float("nan")}).encode()
    inf = json.dumps({**r, "body_mass_g": float("inf")}).encode()
    ninf = json.dumps({**r, "body_mass_g": float("-inf")}).encode()
    huge = json.dumps(r).replace('"body_mass_g": ', '"body_mass_g": 1e400, "x": ').encode()
    return [
        ("nan literal", "/predict", nan, 422, "culmen_length_mm"),
        ("infinity literal", "/predict", inf, 422, "body_mass_g"),
        ("-infinity literal", "/predict", ninf, 422, "body_mass_g"),
        ("overflowing number", "/predict", huge, 422, "body_mass_g"),
        ("number as text", "/predict", {**r, "culmen_depth_mm": "18.5"}, 422, "culmen_depth_mm"),
        ("bool as number", "/predict", {**r, "flipper_length_mm": True}, 422, "flipper_length_mm"),
        ("object as number", "/predict", {**r, "flipper_length_mm": {"v": 1}}, 422, "flipper_length_mm"),
        ("unit error (4000 mm bill)", "/predict", {**r, "culmen_length_mm": 4000.0}, 422, "culmen_length_mm"),
        ("negative mass", "/predict", {**r, "body_mass_g": -5000.0}, 422, "body_mass_g"),
        ("unknown category", "/predict", {**r, "island": "Atlantis"}, 422, "island"),
        ("null category", "/predict", {**r, "island": None}, 422, "island"),
        ("very long category", "/predict", {**r, "island": "B" * 10_000}, 422, "island"),
        ("kilograms for grams", "/predict", {**r, "body_mass_g": 3.8}, 422, "body_mass_g"),
        ("missing field", "/predict", {k: v for k, v in r.items() if k != "sex"}, 422, "sex"),
        ("extra field", "/predict", {**r, "bill_lenght_mm": 40.0}, 422, "bill_lenght_mm"),
        ("empty object", "/predict", {}, 422, "island"),
        ("array body", "/predict", [r], 422, None),
        ("scalar body", "/predict", 42, 422, None),
        ("null body", "/predict", b"null", 422, None),
        ("empty body", "/predict", b"", 422, None),
        ("truncated JSON", "/predict", json.dumps(r).encode()[:-5], 422, None),
        ("invalid UTF-8", "/predict", b'{"island": "\xff\xfe"}', 422, None),
        ("binary garbage", "/predict", bytes(range(256)), 422, None),
        ("deeply nested", "/predict", b"[" * 20_000 + b"]" * 20_000, 422, None),
        ("record body over 64 KiB", "/predict", {**r, "pad": "x" * 2**16}, 413, None),
        ("batch body over 1 MiB", "/predict/batch", {"instances": [r], "pad": "x" * (2**20 + 10)}, 413, None),
        ("batch: no instances", "/predict/batch", {"instances": []}, 422, "instances"),
        ("batch: over max_batch", "/predict/batch", {"instances": [r] * 1001}, 422, "instances"),
        ("batch: one bad record", "/predict/batch", {"instances": [r, {**r, "sex": 3}]}, 422, "sex"),
        ("batch: wrong key", "/predict/batch", {"records": [r]}, 422, "instances"),
        ("batch: instances not a list", "/predict/batch", {"instances": r}, 422, "instances"),
        ("single record to batch", "/invocations", r, 422, None),
    ]


def test_at_least_fifteen_malformed_payloads():
    assert len(_malformed({"island": "Biscoe", "sex": "male", "body_mass_g": 1.0})) == 32


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}])
def test_wrong_content_type_is_415(client, rows, headers):
    r = client.post("/predict", content=json.dumps(rows[0]).encode(), headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert client.post("/predict", content=json.dumps(rows[0]), headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_chunked_body_refused_at_the_limit(client, rows):
    "A streamed body with no Content-Length is cut off at the limit, not read to the end."
    sent = []

    def chunks():
        for _ in range(64):  # 64 MiB offered, refused after about 1 MiB
            sent.append(1)
            yield b" " * 2**20
    r = client.post("/predict/batch", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/predict", content=iter([json.dumps(rows[0]).encode()]), headers={"content-type": "application/json"})
    assert r.status_code == 200  # a small chunked body is fine


def test_error_list_is_capped(client, rows):
    r = client.post("/predict", json={**rows[0], **{f"k{i}": i for i in range(2000)}})
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(detail) == 21 and detail[-1]["type"] == "too_many_errors"
    assert "1980 more errors" in detail[-1]["msg"]


def test_client_disconnect_mid_body_is_not_a_500(reg, rows):
    import socket
    with background(create_app(reg)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"is")
        time.sleep(0.5)
        text = httpx.get(url + "/metrics").text
    assert 'status="500"' not in text
    assert 'trainkit_errors_total{endpoint="/predict",kind="disconnect"} 1.0' in text


def test_unexpected_exception_is_a_counted_json_500(reg, rows, monkeypatch):
    import trainkit.predictor
    monkeypatch.setattr(trainkit.predictor.Served, "predict", lambda self, rows: 1 / 0)
    with TestClient(create_app(reg), raise_server_exceptions=False) as c:
        r = c.post("/predict/batch", json={"instances": rows[:2]})
        assert r.status_code == 500 and r.json() == {"detail": "internal error (ZeroDivisionError); see the service log"}
        assert 'trainkit_errors_total{endpoint="/predict/batch",kind="internal"} 1.0' in c.get("/metrics").text
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize("case", range(32))
def test_malformed_payload_gets_4xx_never_500(client, rows, case):
    cases = _malformed(rows[0])
    name, path, body, status, field = cases[case]
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    detail = r.json()["detail"]  # JSON, even for NaN or bytes: the handler never echoes input
    assert "NaN" not in r.text and "Infinity" not in r.text
    if field is not None:
        assert any(field in map(str, d["loc"]) for d in detail), (name, detail)
    assert client.get("/health").status_code == 200  # and the service is still up


def test_wrong_methods_and_paths(client):
    assert client.get("/predict").status_code == 405
    assert client.put("/model").status_code == 405
    assert client.get("/no/such/path").status_code == 404
    metrics = client.get("/metrics").text
    assert 'endpoint="other"' in metrics and "/no/such/path" not in metrics  # no time series per scanned URL


def test_nan_model_answers_500_with_a_reason_never_200_null(tmp_path, learner, rows):
    broken = another_model(learner, hidden=(32,), seed=0, epochs=1)  # its own: its weights are about to be broken
    with torch.no_grad():
        next(m for m in broken.model.net if isinstance(m, torch.nn.Linear)).weight.fill_(float("nan"))
    app = create_app(bundle=export(broken, tmp_path / "bundles"))
    with TestClient(app) as c:
        r = c.post("/predict", json=rows[0])
        assert r.status_code == 500 and "non-finite" in r.json()["detail"], r.text
        r = c.post("/predict/batch", json={"instances": rows[:5]})
        assert r.status_code == 500 and "null" not in r.text
        assert 'trainkit_errors_total{endpoint="/predict",kind="model"} 1.0' in c.get("/metrics").text


# ------------------------------------------------------------------------------------------ auth, readiness

def test_api_key(reg, rows):
    with TestClient(create_app(reg, api_key="s3cret")) as c:
        for path, body in [("/predict", rows[0]), ("/predict/batch", {"instances": rows[:2]}), ("/invocations", {"instances": rows[:2]})]:
            assert c.post(path, json=body).status_code == 401
            assert c.post(path, json=body, headers={"X-API-Key": "s3cre"}).status_code == 401
            assert c.post(path, json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/model").status_code == 401 and c.get("/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        for open_path in ("/health", "/ready", "/ping", "/metrics"):
            assert c.get(open_path).status_code == 200
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["APIKey"]["name"] == "X-API-Key"
        assert spec["paths"]["/predict"]["post"]["security"] == [{"APIKey": []}]
        assert "trainkit_errors_total{endpoint=\"/predict\",kind=\"auth\"} 2.0" in c.get("/metrics").text


def test_api_key_must_be_ascii(reg):
    with pytest.raises(DataError, match="printable ASCII"):
        create_app(reg, api_key="s3crét")


def test_bad_current_at_startup_starts_unready_then_recovers(reg, rows):
    (reg.root / "CURRENT").write_text("no-such-version\n")
    with TestClient(create_app(reg, poll=0.05)) as c:
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 503
        reg.promote("v1")  # promote repairs CURRENT
        deadline = time.monotonic() + 10
        while c.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.post("/predict", json=rows[0]).json()["version"] == "v1"


def test_watcher_survives_any_error_and_retries_a_failed_version(reg, learner, rows):
    v2 = reg.add(another_model(learner))
    weights = reg.root / "versions" / v2 / "weights.safetensors"
    good = weights.read_bytes()
    with TestClient(create_app(reg, poll=0.05, retry=0.3)) as c:
        current = reg.root / "CURRENT"
        current.rename(reg.root / "CURRENT.bak")
        current.mkdir()  # reading CURRENT now raises IsADirectoryError: the watcher must live on
        time.sleep(0.3)
        current.rmdir()
        weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # v2 does not verify ...
        current.write_text(v2 + "\n")
        time.sleep(0.4)
        assert c.post("/predict", json=rows[0]).json()["version"] == "v1"
        weights.write_bytes(good)  # ... until the disk is repaired: retried after `retry` seconds
        deadline = time.monotonic() + 10
        while c.post("/predict", json=rows[0]).json()["version"] != v2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.post("/predict", json=rows[0]).json()["version"] == v2
        assert float(next(l for l in c.get("/metrics").text.splitlines()
                          if l.startswith('trainkit_errors_total{endpoint="reload"')).split()[-1]) >= 2


def test_not_ready_until_a_version_is_promoted(tmp_path, learner, rows):
    reg = make_registry(tmp_path / "unpromoted", learner, promote=False)
    with TestClient(create_app(reg, poll=0.05)) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 503 and c.get("/ping").status_code == 503
        assert c.post("/predict", json=rows[0]).status_code == 503
        reg.promote("v1")
        deadline = time.monotonic() + 10
        while c.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/ready").json() == {"status": "ready", "version": "v1"}
        assert c.post("/predict", json=rows[0]).status_code == 200


def test_openapi_documents_the_current_schema(client, columns):
    spec = client.get("/openapi.json").json()
    record = spec["components"]["schemas"]["Record"]
    assert set(record["properties"]) == set(columns) and set(record["required"]) == set(columns)
    assert record["additionalProperties"] is False
    island = record["properties"]["island"]
    assert island["enum"] == ["Biscoe", "Dream", "Torgersen"]
    assert spec["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Batch"}


# ------------------------------------------------------------------------------------------ reloads

def _hammer(url: str, record: dict, stop: threading.Event, seen: list):
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            try:
                r = c.post("/predict", json=record)
                seen.append((r.status_code, r.json().get("version")))
            except httpx.HTTPError as e:  # a dropped connection is a failure too
                seen.append((repr(e), None))


def test_promotion_reloads_without_dropping_requests(reg, learner, rows):
    v2 = reg.add(another_model(learner))
    with background(create_app(reg, poll=0.05)) as url:
        seen, stop = [], threading.Event()
        threads = [threading.Thread(target=_hammer, args=(url, rows[0], stop, seen)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        reg.promote(v2)
        time.sleep(1.0)
        reg.rollback()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        metrics = httpx.get(url + "/metrics").text
    statuses = {s for s, _ in seen}
    assert statuses == {200}, statuses
    order = [v for i, (_, v) in enumerate(seen) if i == 0 or v != seen[i - 1][1]]
    assert {"v1", v2} <= set(order) and seen[-1][1] == "v1"  # served v1, then v2, then v1 again
    assert 'trainkit_model_info{version="v1"} 1.0' in metrics and "trainkit_model_reloads_total 2.0" in metrics


def test_a_version_that_fails_to_verify_is_not_served(reg, learner, rows):
    v2 = reg.add(another_model(learner))
    weights = reg.root / "versions" / v2 / "weights.safetensors"
    with TestClient(create_app(reg, poll=0.05)) as c:
        blob = bytearray(weights.read_bytes())
        blob[-3] ^= 1
        weights.write_bytes(bytes(blob))
        (reg.root / "CURRENT").write_text(v2 + "\n")  # behind the registry's back: promote() would refuse
        time.sleep(0.5)
        r = c.post("/predict", json=rows[0])
        assert r.status_code == 200 and r.json()["version"] == "v1"
        assert 'trainkit_errors_total{endpoint="reload",kind="reload"} 1.0' in c.get("/metrics").text


@pytest.mark.parametrize("where", ["add", "promote"])
def test_crash_mid_export_or_promote_keeps_the_previous_version_serving(reg, learner, rows, monkeypatch, where):
    import trainkit.export
    import trainkit.registry
    with background(create_app(reg, poll=0.05)) as url:
        seen, stop = [], threading.Event()
        t = threading.Thread(target=_hammer, args=(url, rows[0], stop, seen))
        t.start()
        time.sleep(0.3)
        name = "atomic_write" if where == "promote" else "seal"  # writes CURRENT; seals a new bundle's manifest
        real = getattr(trainkit.registry if where == "promote" else trainkit.export, name)

        def crashing(*a, **k):
            path = a[0] if where == "promote" else a[0] / a[1]
            if path.name in ("CURRENT", "manifest.json"):
                raise KeyboardInterrupt("power cut")
            return real(*a, **k)
        monkeypatch.setattr(trainkit.registry if where == "promote" else trainkit.export, name, crashing)
        with pytest.raises(KeyboardInterrupt):
            if where == "add":
                reg.add(another_model(learner, seed=2))
            else:
                reg.promote(reg.add(another_model(learner, seed=2)))
        time.sleep(0.5)
        stop.set()
        t.join()
    assert {s for s, _ in seen} == {200} and {v for _, v in seen} == {"v1"}
    assert reg.current() == "v1"


# ------------------------------------------------------------------------------------------ metrics, drift

def test_metrics_follow_the_contract_and_each_app_has_its_own_registry(reg, rows):
    with TestClient(create_app(reg)) as a, TestClient(create_app(reg)) as b:  # no "Duplicated timeseries"
        a.post("/predict", json=rows[0])
        a.post("/predict", json={})
        a.get("/model")
        text = a.get("/metrics").text
        assert contract_problems(text) == []
        assert 'trainkit_requests_total{endpoint="/predict",method="POST",status="200"} 1.0' in text
        assert 'trainkit_predictions_total{label="' in text.replace('version="v1",', "")
        assert "trainkit_requests_total{" not in b.get("/metrics").text.split("/metrics")[0]


def test_drift_alarm_in_model_and_metrics(client, test_df, columns):
    calm = client.get("/model").json()["drift"]
    assert calm["window"] == 0 and calm["alarm"] is False
    heavy = test_df.sample(200, replace=True, random_state=0).assign(body_mass_g=lambda d: d.body_mass_g + 700)
    assert client.post("/predict/batch", json={"instances": records(heavy, columns)}).status_code == 200
    drift = client.get("/model").json()["drift"]
    assert drift["window"] == 200 and drift["alarm"] and drift["features"]["body_mass_g"]["drifted"]
    assert not drift["features"]["island"]["drifted"]
    time.sleep(2.1)  # the drift report is cached for 2 s
    text = client.get("/metrics").text
    assert "trainkit_drift_alarm 1.0" in text and "trainkit_drift_window 200.0" in text
    psi = float(next(l for l in text.splitlines() if l.startswith('trainkit_drift_psi{feature="body_mass_g"}')).split()[-1])
    assert psi > 0.2


def test_a_feature_that_stops_arriving_is_drift(client, test_df, columns):
    rows = records(test_df.sample(150, replace=True, random_state=1).assign(delta_15n=None), columns)
    assert client.post("/predict/batch", json={"instances": rows}).status_code == 200
    drift = client.get("/model").json()["drift"]["features"]["delta_15n"]
    assert drift["missing"] == 1.0 and drift["drifted"]
    assert 'trainkit_drift_missing{feature="delta_15n"} 1.0' in client.get("/metrics").text


def test_served_batches_concurrent_single_requests(reg, rows):
    "Dynamic batching: requests arriving in one event-loop turn share a model call, each gets its own answer."
    import asyncio
    served = load_served(reg.load())
    calls = []
    real = served.predict
    served.predict = lambda rs: calls.append(len(rs)) or real(rs)

    async def go():
        return await asyncio.gather(*(served.predict_one(r) for r in rows[:20]))
    answers = asyncio.run(go())
    assert calls == [20]
    assert answers == real(rows[:20])


def test_create_app_needs_exactly_one_source(reg):
    with pytest.raises(DataError, match="pass registry="):
        create_app()
    with pytest.raises(DataError, match="pass registry="):
        create_app(registry=reg, bundle=reg.load().path)


# ------------------------------------------------------------------------------------------ the Service, piece by piece

def service(reg=None, bundle=None, **settings) -> Service:
    "The Service behind a fresh app, as create_app built it: not started, so nothing is loaded until a test loads it."
    return create_app(registry=reg, bundle=bundle, **settings).state.service


def metrics_text(s: Service) -> str:
    return generate_latest(s.metrics.registry).decode()


def test_create_app_exposes_its_service(reg):
    app = create_app(reg, poll=0.05, max_record=123)
    s = app.state.service
    assert isinstance(s, Service) and s.app is app and s.registry.root == reg.root
    assert (s.max_record, s.poll, s.api_key) == (123, 0.05, None)
    assert s.served is None and s.failed == (None, 0.0)  # the lifespan loads, not the constructor
    with pytest.raises(HTTPError) as e:
        s.current()
    assert (e.value.status, e.value.kind) == (503, "not_ready")
    with TestClient(app) as c:
        assert s.served.version == "v1" and c.get("/ready").json() == {"status": "ready", "version": "v1"}
        assert s.current() is s.served


def test_authorize_wants_the_exact_key(reg):
    s = service(reg, api_key="s3cret")
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cre"}, {"X-API-Key": "s3cret2"}):
        with pytest.raises(HTTPError) as e:
            s.authorize(request(headers=headers)[0])
        assert (e.value.status, e.value.kind) == (401, "auth"), headers
    assert s.authorize(request(headers={"x-api-key": "s3cret"})[0]) is None
    assert service(reg).authorize(request()[0]) is None  # no key set: every request passes


def test_parse_checks_key_type_size_then_fields(reg, rows):
    "Service.parse on requests built by hand: each check refuses with its status, and reads no more than it must."
    s = service(reg, api_key="k")
    s.use(s.load())
    model, body = s.served.record, json.dumps(rows[0]).encode()
    ok = {"content-type": "application/json", "x-api-key": "k"}

    def refused(req, limit=2**16) -> HTTPError:
        with pytest.raises(HTTPError) as e:
            asyncio.run(s.parse(req, model, limit))
        return e.value

    for kind in ("application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"):
        assert asyncio.run(s.parse(request(body, {**ok, "content-type": kind})[0], model, 2**16)).model_dump(by_alias=True) == rows[0]
    r, read = request(body, {"content-type": "application/json"})
    assert (refused(r).status, read) == (401, [])  # no key: refused before the body is read
    for kind in ("text/plain", "application/x-www-form-urlencoded", ""):
        r, read = request(body, {**ok, "content-type": kind})
        e = refused(r)
        assert (e.status, e.kind, read) == (415, "validation", []) and "application/json" in e.detail
    r, read = request(body, {**ok, "content-length": str(2**16 + 1)})
    assert (refused(r).status, read) == (413, [])  # announced too big: not read at all
    r, read = request([b" " * 1000] * 100, ok)
    e = refused(r, limit=2500)
    assert (e.status, e.kind, len(read)) == (413, "too_large", 3)  # streamed: cut off at the chunk that passes the limit
    e = refused(request([body[:10]], ok, disconnect=True)[0])  # the client went away mid-body
    assert (e.status, e.kind) == (400, "disconnect")
    r, _ = request(json.dumps({**rows[0], "island": "Atlantis", "body_mass_g": "heavy"}).encode(), ok)
    e = refused(r)
    assert (e.status, e.kind) == (422, "validation") and {d["loc"][0] for d in e.detail} == {"island", "body_mass_g"}
    assert "Atlantis" not in json.dumps(e.detail) and "heavy" not in json.dumps(e.detail)  # fields named, values not echoed


def test_answer_refuses_a_non_finite_output_before_counting_or_watching(reg, rows):
    s = service(reg)
    s.use(s.load())
    served = s.served
    good = served.predict(rows[:2])
    with pytest.raises(HTTPError) as e:
        s.answer(served, rows[:2], [good[0], None])
    assert (e.value.status, e.value.kind) == (500, "model") and "non-finite output for record 1" in e.value.detail
    assert len(served.monitor) == 0 and "trainkit_predictions_total{" not in metrics_text(s)
    assert s.answer(served, rows[:2], good) == good and len(served.monitor) == 2
    counted = [l for l in metrics_text(s).splitlines() if l.startswith("trainkit_predictions_total{") and 'version="v1"' in l]
    assert sum(float(l.split()[-1]) for l in counted) == 2.0


def test_check_records_a_failed_load_and_retries_it_after_retry_seconds(reg, learner):
    v2 = reg.add(another_model(learner))
    weights = reg.root / "versions" / v2 / "weights.safetensors"
    good = weights.read_bytes()
    s = service(reg, retry=3600.0)
    s.use(s.load())
    real, loads = s.load, []
    s.load = lambda version=None: loads.append(version) or real(version)
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    (reg.root / "CURRENT").write_text(v2 + "\n")  # behind the registry's back: promote() would refuse
    asyncio.run(s.check())
    assert loads == [v2] and s.failed[0] == v2 and s.served.version == "v1"
    asyncio.run(s.check())
    assert loads == [v2]  # within `retry` seconds: not tried again
    weights.write_bytes(good)
    s.retry = 0.0
    asyncio.run(s.check())
    assert loads == [v2, v2] and s.served.version == v2
    asyncio.run(s.check())
    assert loads == [v2, v2]  # CURRENT is what is served: nothing to load
    text = metrics_text(s)
    assert 'trainkit_errors_total{endpoint="reload",kind="reload"} 1.0' in text and "trainkit_model_reloads_total 1.0" in text
    assert f'trainkit_model_info{{version="{v2}"}} 1.0' in text and 'trainkit_model_info{version="v1"}' not in text


def test_an_unreadable_current_is_reported_once_per_retry_period(reg, caplog):
    "CURRENT is read at every look (a repair is seen at once), but a failure to read it is logged and counted once per `retry`."
    s = service(reg, retry=3600.0)
    s.use(s.load())
    (reg.root / "CURRENT").write_text("v9\n")  # behind the registry's back: promote() would refuse
    with caplog.at_level(logging.ERROR, logger="trainkit.serve"):
        for _ in range(3):
            asyncio.run(s.check())
    assert [r.getMessage()[:19] for r in caplog.records] == ["not serving CURRENT"]
    assert 'trainkit_errors_total{endpoint="reload",kind="reload"} 1.0' in metrics_text(s)
    s.retry = 0.0  # the period is over: reported again
    asyncio.run(s.check())
    assert 'trainkit_errors_total{endpoint="reload",kind="reload"} 2.0' in metrics_text(s)
    s.retry = 3600.0
    reg.promote("v1")  # repaired: the next look reads it, nothing more to report
    asyncio.run(s.check())
    assert s.served.version == "v1" and 'kind="reload"} 2.0' in metrics_text(s)


def test_any_start_up_failure_with_a_registry_starts_unready(reg, rows):
    "An OSError reading CURRENT at start-up is recorded like any failure of `check`: up, unready, then recovers."
    current = reg.root / "CURRENT"
    current.unlink()
    current.mkdir()  # reading CURRENT now raises IsADirectoryError, an OSError (not a DataError)
    with TestClient(create_app(reg, poll=0.05)) as c:
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 503
        assert 'trainkit_errors_total{endpoint="reload",kind="reload"} 1.0' in c.get("/metrics").text
        current.rmdir()
        reg.promote("v1")
        deadline = time.monotonic() + 10
        while c.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.post("/predict", json=rows[0]).json()["version"] == "v1"


def test_check_never_raises(reg, monkeypatch):
    "Whatever goes wrong reading CURRENT is recorded, not raised: an exception would end the watcher."
    s = service(reg)
    monkeypatch.setattr(s.registry, "current", lambda: 1 / 0)
    asyncio.run(s.check())
    assert s.failed[0] == "CURRENT" and s.served is None


def test_openapi_is_cached_until_the_next_swap(reg):
    s = service(reg)
    before = s.openapi()
    assert s.openapi() is before and "Record" not in before["components"]["schemas"]
    s.use(s.load())
    after = s.openapi()
    assert after is not before and after["components"]["schemas"]["Record"]["additionalProperties"] is False
    assert s.openapi() is after


def test_a_fixed_bundle_that_does_not_verify_stops_the_start_up(reg, tmp_path):
    "With a registry the service starts unready and waits; a fixed bundle that fails has nothing to wait for."
    copy = tmp_path / "v1"
    shutil.copytree(reg.root / "versions" / "v1", copy)
    blob = bytearray((copy / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 1
    (copy / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="model.onnx"):
        with TestClient(create_app(bundle=copy)):
            pass


# ------------------------------------------------------------------------------------------ the command

@pytest.mark.slow
def test_trainkit_serve_command(reg, rows):
    "The console script: serves, answers, reads the API key from the named env var, stops cleanly on SIGTERM."
    with cli_server("--registry", str(reg.root), "--api-key-env", "MY_KEY", env={"MY_KEY": "k"}) as (url, proc):
        wait_ready(url, proc)
        assert httpx.post(url + "/predict", json=rows[0]).status_code == 401
        r = httpx.post(url + "/predict", json=rows[0], headers={"X-API-Key": "k"})
        assert r.status_code == 200 and r.json()["version"] == "v1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) in (0, -signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal
        assert "Application shutdown complete" in proc.stderr.read()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--registry", "/nonexistent/registry"], "No registry at /nonexistent/registry"),
    (["--bundle", "/nonexistent/v1"], "No bundle folder at /nonexistent/v1"),
])
def test_trainkit_serve_bad_source_is_one_line(args, message):
    with cli_server(*args) as (url, proc):
        assert proc.wait(60) == 2
        err = proc.stderr.read().strip()
        assert err.count("\n") == 0 and message in err, err


def test_bundle_mode_serves_a_fixed_version(reg, rows, tmp_path):
    copy = tmp_path / "v1"
    shutil.copytree(reg.root / "versions" / "v1", copy)
    with TestClient(create_app(bundle=copy)) as c:
        assert c.post("/predict", json=rows[0]).json()["version"] == "v1"
        assert load_bundle(copy).classes == c.get("/model").json()["classes"]
    assert Registry(reg.root).current() == "v1"


NO_TORCH = """
import sys, importlib.abc
class NoTorch(importlib.abc.MetaPathFinder):  # a Python with no PyTorch installed, as in the serving container
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, NoTorch())
"""


def test_the_service_runs_without_pytorch(penguin_bundle, tmp_path):
    "A registry served, a record predicted, a new version followed: with `import torch` made impossible."
    import subprocess
    import sys
    reg = Registry(tmp_path / "registry")
    reg.promote(reg.add(penguin_bundle.path))
    record = json.dumps(_first_record(penguin_bundle))
    code = NO_TORCH + f"""
import json
from fastapi.testclient import TestClient
from trainkit.serve import create_app
with TestClient(create_app(registry={str(reg.root)!r}, poll=0.05)) as c:
    r = c.post("/predict", json=json.loads({record!r}))
    print(r.status_code, r.json()["version"], r.json()["prediction"])
    print(c.get("/model").status_code, "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = out.stdout.split("\n")[:2]
    assert first.startswith("200 v1 ") and second == "200 False", out.stdout


def _first_record(bundle) -> dict:
    cols = [c["name"] for c in bundle.manifest["input"]["columns"]]
    return {c: None for c in cols} | {"island": "Biscoe", "clutch_completion": "Yes", "sex": "female",
                                      "culmen_length_mm": 45.1, "culmen_depth_mm": 14.5, "flipper_length_mm": 215.0,
                                      "body_mass_g": 5000.0}
