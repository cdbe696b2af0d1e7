"""Checks of the deployment files around `trainkit serve`: Dockerfile, .dockerignore, the Prometheus
config and alerting rules, the Grafana dashboard and the cloud guide.

None of this needs Docker or a cloud account. `promtool` (Debian's `prometheus` package) validates the
Prometheus files, the dashboard's PromQL and the alerts' behaviour on synthetic series; those tests skip,
saying why, where promtool is not installed.

`CONTRACT_METRICS` is the service's metrics contract. `contract_problems(text)` checks a live /metrics
page against it, so the service's own tests can do:

    from test_deploy_files import contract_problems   # tests/ is on sys.path under pytest
    assert contract_problems(client.get("/metrics").text) == []
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROM_CONFIG = ROOT / "deploy" / "prometheus.yml"
PROM_RULES = ROOT / "deploy" / "prometheus-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "trainkit-dashboard.json"
DEPLOY_README = ROOT / "deploy" / "README.md"
CLOUD_DOC = ROOT / "docs" / "cloud.md"

# ---------------------------------------------------------------------------------------------------
# The service's metrics contract: name -> (Prometheus type, label names).
CONTRACT_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "trainkit_requests_total": ("counter", frozenset({"endpoint", "method", "status"})),
    "trainkit_request_duration_seconds": ("histogram", frozenset({"endpoint"})),
    # kind: validation, auth, model, too_large; also not_ready, disconnect, internal, and reload (endpoint="reload")
    "trainkit_errors_total": ("counter", frozenset({"endpoint", "kind"})),
    "trainkit_predictions_total": ("counter", frozenset({"version", "label"})),
    "trainkit_drift_psi": ("gauge", frozenset({"feature"})),
    "trainkit_drift_ks": ("gauge", frozenset({"feature"})),
    "trainkit_drift_alarm": ("gauge", frozenset()),  # 0 or 1
    "trainkit_drift_window": ("gauge", frozenset()),  # records in the drift window
    "trainkit_drift_missing": ("gauge", frozenset({"feature"})),  # share of each feature missing in the window
    "trainkit_model_info": ("gauge", frozenset({"version"})),  # 1 for the serving version
    "trainkit_model_reloads_total": ("counter", frozenset()),
}
CONTRACT_METRIC_NAMES: tuple[str, ...] = tuple(CONTRACT_METRICS)
ERROR_KINDS = ("validation", "auth", "model", "too_large")
_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def contract_problems(text: str) -> list[str]:
    "What a /metrics page (Prometheus text or OpenMetrics) lacks or gets wrong against CONTRACT_METRICS; [] if nothing."
    types: dict[str, str] = {}
    for m in re.finditer(r"^# TYPE (\S+) (\S+)\s*$", text, re.M):
        types[m.group(1)] = m.group(2)
    problems = []
    for name, (kind, labels) in CONTRACT_METRICS.items():
        # prometheus_client's text format names a counter family with _total, OpenMetrics without it.
        got = types.get(name, types.get(name.removesuffix("_total")) if kind == "counter" else None)
        if got is None:
            problems.append(f"{name}: not exposed (no '# TYPE' line)")
            continue
        if got != kind:
            problems.append(f"{name}: type {got}, the contract says {kind}")
        sample_names = {name} | ({name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else set())
        for s in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s", text, re.M):
            if s.group(1) not in sample_names:
                continue
            have = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', s.group(2) or "")) - {"le"}
            if have != labels:
                problems.append(f"{s.group(1)}: labels {sorted(have)}, the contract says {sorted(labels)}")
                break
    return problems


def metric_names(expr: str) -> set[str]:
    "The trainkit metric families a PromQL expression (or label_values() query) reads: suffixes stripped."
    names = set()
    for n in re.findall(r"trainkit_[a-z_]+", expr):
        for suf in _SUFFIXES:
            if n.endswith(suf) and n.removesuffix(suf) in CONTRACT_METRICS:
                n = n.removesuffix(suf)
        names.add(n)
    return names


def test_contract_problems_accepts_prometheus_client_output():
    prom = pytest.importorskip("prometheus_client", reason="prometheus_client (the serve extra) is not installed")
    reg = prom.CollectorRegistry()
    made = {}
    for name, (kind, labels) in CONTRACT_METRICS.items():
        cls = {"counter": prom.Counter, "gauge": prom.Gauge, "histogram": prom.Histogram}[kind]
        made[name] = cls(name, name, sorted(labels), registry=reg)
    made["trainkit_requests_total"].labels(endpoint="/predict", method="POST", status="200").inc()
    made["trainkit_request_duration_seconds"].labels(endpoint="/predict").observe(0.01)
    made["trainkit_model_info"].labels(version="v1").set(1)
    from prometheus_client.openmetrics import exposition as openmetrics

    for render in (prom.generate_latest, openmetrics.generate_latest):  # text format 0.0.4 and OpenMetrics
        assert contract_problems(render(reg).decode()) == []


def test_contract_problems_reports_missing_wrong_type_and_labels():
    page = "\n".join([
        "# TYPE trainkit_requests_total counter",
        'trainkit_requests_total{endpoint="/predict",status="200"} 3',  # no method label
        "# TYPE trainkit_drift_alarm counter",  # should be a gauge
        "trainkit_drift_alarm 0",
    ]) + "\n"
    problems = contract_problems(page)
    assert any(p.startswith("trainkit_requests_total: labels") for p in problems)
    assert any(p.startswith("trainkit_drift_alarm: type counter") for p in problems)
    assert any(p.startswith("trainkit_model_info: not exposed") for p in problems)
    assert len([p for p in problems if "not exposed" in p]) == len(CONTRACT_METRICS) - 2


# ---------------------------------------------------------------------------------------------------
# promtool
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: install Debian's `prometheus` package (apt-get install prometheus)")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


# ---------------------------------------------------------------------------------------------------
# Grafana dashboard
@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_exprs(node) -> list[str]:
    "Every PromQL `expr` in a dashboard (panel targets and annotations) and every variable query."
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                out.append(v)
            elif k == "query" and isinstance(v, str) and "label_values" in v:
                out.append(v)
            else:
                out.extend(all_exprs(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(all_exprs(v))
    return out


def panels(dashboard) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


def panel_exprs(panel) -> str:
    return "\n".join(t.get("expr", "") for t in panel.get("targets", []))


def test_dashboard_is_a_grafana_dashboard(dashboard):
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in panels(dashboard):
        # every query goes to the chosen Prometheus data source
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
        assert p.get("description"), f"panel {p['title']!r} needs a description"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_dashboard_reads_only_contract_metrics(dashboard):
    exprs = all_exprs(dashboard)
    assert len(exprs) >= 12
    used = set()
    for e in exprs:
        names = metric_names(e)
        assert names, f"no trainkit metric in {e!r}"
        unknown = names - set(CONTRACT_METRICS)
        assert not unknown, f"{sorted(unknown)} in {e!r} are not in the service's metrics contract"
        used |= names
    assert used == set(CONTRACT_METRICS), f"no panel shows {sorted(set(CONTRACT_METRICS) - used)}"


def test_dashboard_has_the_panels_the_service_needs(dashboard):
    ps = panels(dashboard)

    def find(pred, what):
        hits = [p for p in ps if pred(p)]
        assert hits, f"no panel shows {what}"
        return hits[0]

    find(lambda p: re.search(r"sum by \((endpoint, status|status, endpoint)\) \(rate\(trainkit_requests_total", panel_exprs(p)),
         "the request rate by endpoint and status")
    lat = find(lambda p: "histogram_quantile" in panel_exprs(p), "latency quantiles")
    qs = set(re.findall(r"histogram_quantile\((0\.\d+),\s*sum by \([^)]*\ble\b[^)]*\) \(rate\(trainkit_request_duration_seconds_bucket",
                        panel_exprs(lat)))
    assert {"0.5", "0.99"} <= qs, "p50 and p99 from the rate of the histogram's buckets, summed by le"
    assert lat["fieldConfig"]["defaults"]["unit"] == "s"
    find(lambda p: re.search(r"sum by \(kind\) \(rate\(trainkit_errors_total", panel_exprs(p)), "the error rate by kind")
    find(lambda p: re.search(r"by \([^)]*\blabel\b[^)]*\) \(rate\(trainkit_predictions_total", panel_exprs(p)),
         "the prediction distribution by label")
    psi = find(lambda p: "trainkit_drift_psi" in panel_exprs(p), "PSI per feature")
    assert "feature" in panel_exprs(psi)
    steps = psi["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert any(s["value"] == 0.2 for s in steps), "PSI panel needs a threshold at 0.2"
    assert psi["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off", "the 0.2 threshold must be drawn"
    alarm = find(lambda p: p["type"] == "stat" and "trainkit_drift_alarm" in panel_exprs(p), "the drift alarm as a stat")
    assert {"0", "1"} <= set(alarm["fieldConfig"]["defaults"]["mappings"][0]["options"])
    find(lambda p: p["type"] == "stat" and "trainkit_model_info" in panel_exprs(p), "the serving version")
    find(lambda p: "trainkit_model_reloads_total" in panel_exprs(p), "model reloads")


def grafana_to_promql(expr: str) -> str:
    "Replace Grafana's variables by values Prometheus accepts, to check the syntax."
    durations = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: durations.get(m.group(1), ".*"), expr)


@needs_promtool
def test_dashboard_promql_is_valid(dashboard, tmp_path):
    exprs = [grafana_to_promql(e) for e in all_exprs(dashboard) if "label_values" not in e]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(json.dumps(rules), encoding="utf-8")  # JSON is YAML
    r = promtool("check", "rules", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(exprs)} rules found" in r.stdout


# ---------------------------------------------------------------------------------------------------
# Prometheus config and alerting rules
@needs_promtool
def test_prometheus_config_is_valid():
    r = promtool("check", "config", str(PROM_CONFIG))  # also checks the rule files it names
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout


@needs_promtool
def test_prometheus_rules_are_valid():
    r = promtool("check", "rules", str(PROM_RULES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_scrapes_the_service():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed; promtool still checks the file's syntax")
    cfg = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    job = jobs["trainkit"]
    assert job["scrape_interval"] == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert ["127.0.0.1:8000"] in [sc["targets"] for sc in job["static_configs"]]
    for rf in cfg["rule_files"]:
        assert (PROM_CONFIG.parent / rf).is_file(), rf


def test_rules_read_only_contract_metrics():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed; promtool still checks the rules")
    rules = [r for g in yaml.safe_load(PROM_RULES.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"TrainkitDriftAlarm", "TrainkitHighServerErrorRate", "TrainkitHighLatencyP99"} <= names
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        assert r["annotations"]["summary"], r["alert"]
        unknown = metric_names(r["expr"]) - set(CONTRACT_METRICS)
        assert not unknown, f"{r['alert']}: {sorted(unknown)} are not in the metrics contract"


# Synthetic series and the alerts they must (and must not) raise; run by `promtool test rules`.
# `count(ALERTS{...})` is 1 while the alert fires and empty otherwise.
ALERT_CASES = [
    # (alert, input series, [(minute, fires?)])
    ("TrainkitDriftAlarm",
     [("trainkit_drift_alarm", "0 0 1x30")],
     [(5, False), (8, True)]),
    ("TrainkitFeatureDrift",  # PSI 0.35 on one feature; the window reaches 100 records at minute 20
     [('trainkit_drift_psi{feature="body_mass_g"}', "0.35x60"), ('trainkit_drift_psi{feature="island"}', "0.05x60"),
      ("trainkit_drift_window", "0+5x60")],
     [(19, False), (30, False), (40, True)]),
    ("TrainkitHighServerErrorRate",  # 20% of /predict answers are 500 from minute 10
     [('trainkit_requests_total{endpoint="/predict",method="POST",status="200"}', "0+80x40"),
      ('trainkit_requests_total{endpoint="/predict",method="POST",status="500"}', "0x10 0+20x30")],
     [(9, False), (25, True)]),
    ("TrainkitHighServerErrorRate",  # /ready answering 503 (no model yet) is not a server error
     [('trainkit_requests_total{endpoint="/ready",method="GET",status="503"}', "0+10x40"),
      ('trainkit_requests_total{endpoint="/predict",method="POST",status="200"}', "0+10x40")],
     [(30, False)]),
    ("TrainkitModelErrors",
     [('trainkit_errors_total{endpoint="/predict",kind="model"}', "0x10 0+1x30")],
     [(9, False), (25, True)]),
    ("TrainkitReloadFailing",  # a promoted version fails to load from minute 10, retried every 30 s
     [('trainkit_errors_total{endpoint="reload",kind="reload"}', "0x10 1+2x20")],
     [(9, False), (15, True)]),
    ("TrainkitHighValidationErrorRate",  # half the requests are rejected by the schema from minute 10
     [('trainkit_requests_total{endpoint="/predict",method="POST",status="200"}', "0+10x60"),
      ('trainkit_requests_total{endpoint="/predict",method="POST",status="422"}', "0x10 0+10x50"),
      ('trainkit_errors_total{endpoint="/predict",kind="validation"}', "0x10 0+10x50")],
     [(9, False), (40, True)]),
    ("TrainkitHighLatencyP99",  # fast until minute 10, then every request takes between 1 and 2.5 s
     [('trainkit_request_duration_seconds_bucket{endpoint="/predict",le="0.1"}', "0+100x10 1000x30"),
      ('trainkit_request_duration_seconds_bucket{endpoint="/predict",le="1"}', "0+100x10 1000x30"),
      ('trainkit_request_duration_seconds_bucket{endpoint="/predict",le="2.5"}', "0+100x40"),
      ('trainkit_request_duration_seconds_bucket{endpoint="/predict",le="+Inf"}', "0+100x40")],
     [(9, False), (30, True)]),
    ("TrainkitHighLatencyP99",  # slow scrapes of /metrics do not count
     [('trainkit_request_duration_seconds_bucket{endpoint="/metrics",le="1"}', "0x40"),
      ('trainkit_request_duration_seconds_bucket{endpoint="/metrics",le="+Inf"}', "0+100x40")],
     [(30, False)]),
    ("TrainkitNoModelLoaded",  # up, but no model_info: no model
     [("up", "1x30")],
     [(1, False), (5, True)]),
    ("TrainkitNoModelLoaded",  # a model serving
     [("up", "1x30"), ('trainkit_model_info{version="v1"}', "1x30")],
     [(10, False)]),
    ("TrainkitDown",
     [("up", "1x5 0x20")],
     [(5, False), (9, True)]),
]


def _with_target(series: str) -> str:
    "Give a series the labels Prometheus adds when it scrapes the trainkit job."
    target = 'instance="127.0.0.1:8000", job="trainkit"'
    return series[:-1] + ", " + target + "}" if series.endswith("}") else series + "{" + target + "}"


@needs_promtool
def test_alerts_fire_when_they_should(tmp_path):
    tests = []
    for alert, series, checks in ALERT_CASES:
        tests.append({
            "interval": "1m",
            "input_series": [{"series": _with_target(s), "values": v} for s, v in series],
            "promql_expr_test": [
                {"expr": f'count(ALERTS{{alertname="{alert}", alertstate="firing"}})', "eval_time": f"{m}m",
                 "exp_samples": [{"labels": "{}", "value": 1}] if fires else []}
                for m, fires in checks],
        })
    f = tmp_path / "alerts.test.yml"
    f.write_text(json.dumps({"rule_files": [str(PROM_RULES)], "evaluation_interval": "1m", "tests": tests}), encoding="utf-8")
    r = promtool("test", "rules", str(f))
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------------
# Dockerfile
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    "(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # comment lines inside a continued instruction are ignored
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[dict]]:
    "Global ARG defaults and the stages in order: {'name', 'base', 'ins'}."
    global_args, stages = {}, []
    for ins, args in dockerfile_instructions(text):
        if ins == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append({"name": name, "base": base, "ins": []})
        elif not stages:
            assert ins == "ARG", f"only ARG may come before the first FROM, not {ins}"
            key, _, default = args.partition("=")
            global_args[key] = default.strip('"')
        else:
            stages[-1]["ins"].append((ins, args))
    return global_args, stages


def stage_chain(stages: list[dict], name: str) -> list[dict]:
    "A stage and the stages it is built FROM, root first."
    by_name = {s["name"]: s for s in stages}
    chain, s = [], by_name[name]
    while True:
        chain.insert(0, s)
        if s["base"] not in by_name:
            return chain
        s = by_name[s["base"]]


def effective(chain: list[dict], instruction: str) -> str | None:
    "The arguments of the last `instruction` in effect for the last stage of `chain`."
    found = None
    for s in chain:
        for ins, args in s["ins"]:
            if ins == instruction:
                found = args
    return found


@pytest.fixture(scope="module")
def docker():
    text = DOCKERFILE.read_text(encoding="utf-8")
    global_args, stages = dockerfile_stages(text)
    return {"text": text, "args": global_args, "stages": stages, "final": stage_chain(stages, stages[-1]["name"])}


def test_dockerfile_bases_are_slim_python(docker):
    names = {s["name"] for s in docker["stages"]}
    external = {s["base"] for s in docker["stages"] if s["base"] not in names}
    assert external and all(re.fullmatch(r"python:3\.1[2-9]-slim(-\w+)?", b) for b in external), external
    assert {"builder", "runtime"} <= names, "a builder stage and a runtime stage that does not carry build tools"


def is_root(user: str | None) -> bool:
    return user is None or user.split(":")[0] in {"root", "0"}


@pytest.mark.parametrize("target", ["final", "runtime"])
def test_image_does_not_run_as_root(docker, target):
    chain = docker["final"] if target == "final" else stage_chain(docker["stages"], "runtime")
    # The user in force where the command is set, and the one in force at the end of the stage.
    user = None
    for s in chain:
        for ins, args in s["ins"]:
            if ins == "USER":
                user = args
            if ins in {"CMD", "ENTRYPOINT"}:
                assert not is_root(user), f"{ins} in stage {s['name']} would run as {user or 'root'}"
    assert not is_root(user), f"the {target} image runs as {user or 'root'}"


def test_dockerfile_installs_the_serving_requirements_and_no_torch(docker):
    "The image installs deploy/requirements-serve.txt, then trainkit with --no-deps: PyTorch never enters it."
    runs = " ".join(a for s in docker["stages"] for i, a in s["ins"] if i == "RUN")
    assert "pip install -r requirements-serve.txt" in runs and "pip install --no-deps ." in runs
    assert "torch" not in (ROOT / "deploy" / "requirements-serve.txt").read_text().split("# Each line")[1]
    assert "'torch' not in sys.modules" in runs and '! python -c "import torch"' in runs


def test_serving_requirements_are_pyprojects_own(docker):
    "Each serving requirement is written exactly as in pyproject.toml: one set of version bounds, not two."
    import tomllib
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower(): r for r in
                proj["dependencies"] + [r for rs in proj["optional-dependencies"].values() for r in rs]}
    lines = [line.split(" #")[0].strip() for line in (ROOT / "deploy" / "requirements-serve.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) >= 10
    for line in lines:
        name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower()
        assert declared.get(name, "").replace('"', "'") == line, f"{line!r} differs from pyproject's {declared.get(name)!r}"
    assert "!deploy/requirements-serve.txt" in DOCKERIGNORE.read_text(), "the build context must hold it"


def test_dockerfile_copies_what_exists(docker):
    for s in docker["stages"]:
        for ins, args in s["ins"]:
            if ins == "COPY" and "--from=" not in args:
                *sources, _dest = [w for w in shlex.split(args) if not w.startswith("--")]
                for src in sources:
                    if "${REGISTRY}" not in src:
                        assert (ROOT / src).exists(), f"COPY {src}: no such file in the build context"


def test_final_image_bakes_the_registry_into_models(docker):
    copies = [a for s in docker["final"] for i, a in s["ins"] if i == "COPY" and "/models" in a]
    assert any("${REGISTRY}" in a for a in copies), "the default target copies the registry (build arg REGISTRY) to /models"
    assert "ARG REGISTRY=" in docker["text"]


def test_port_is_8000_and_never_baked_in(docker):
    for chain_name in ("final", "runtime"):
        chain = docker["final"] if chain_name == "final" else stage_chain(docker["stages"], "runtime")
        envs = " ".join(a for s in chain for i, a in s["ins"] if i == "ENV")
        # PORT set in the image would win over AIP_HTTP_PORT, the port Vertex AI assigns.
        assert not re.search(r"(^|\s)PORT=", envs), f"the {chain_name} image must not set PORT"
    assert effective(docker["final"], "EXPOSE") == "8000"


def test_cmd_runs_trainkit_serve_on_all_interfaces(docker):
    cmd = effective(docker["final"], "CMD")
    assert json.loads(cmd) == ["serve"], "CMD in exec form; SageMaker replaces it with `serve`"
    assert effective(docker["final"], "ENTRYPOINT") is None, "an ENTRYPOINT would receive SageMaker's `serve` argument"


def serve_script(docker) -> str:
    "The text of /usr/local/bin/serve, produced by running the Dockerfile's own printf."
    run = next(a for s in docker["stages"] for i, a in s["ins"] if i == "RUN" and "> /usr/local/bin/serve" in a)
    printf = run.split("> /usr/local/bin/serve")[0]
    return subprocess.run(["sh", "-c", printf], capture_output=True, text=True, check=True).stdout


def test_serve_wrapper_starts_trainkit_serve(docker, tmp_path):
    script = serve_script(docker)
    assert script.startswith("#!/bin/sh\n")
    assert "trainkit serve --registry" in script and "--host 0.0.0.0" in script
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "serve").write_text(script)
    (bin_ / "trainkit").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')  # prints its argv
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_}:/usr/bin:/bin"}

    def argv(*extra, **more):
        r = subprocess.run(["serve", *extra], env={**env, **more}, capture_output=True, text=True, check=True)
        return r.stdout.splitlines()

    assert argv() == ["serve", "--registry", "/models", "--host", "0.0.0.0"]
    assert argv("--port", "9000", "--api-key-env", "MY KEY") == [
        "serve", "--registry", "/models", "--host", "0.0.0.0", "--port", "9000", "--api-key-env", "MY KEY"]
    assert argv(TRAINKIT_REGISTRY="/opt/ml/model")[:3] == ["serve", "--registry", "/opt/ml/model"]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_healthcheck_probes_health_with_urllib(docker, free_port):
    hc = effective(docker["final"], "HEALTHCHECK")
    assert hc and not hc.upper().startswith("NONE")
    assert "--start-period=" in hc
    cmd = json.loads(hc[hc.index("CMD") + 3:].strip())
    assert cmd[:2] == ["python", "-c"], "exec form, python only (no curl or wget in slim images)"
    assert "urllib.request" in cmd[2] and "/health" in cmd[2]
    probe = [sys.executable, "-c", cmd[2]]

    def run(**env):
        base = {k: v for k, v in os.environ.items() if k not in {"PORT", "AIP_HTTP_PORT"}}
        return subprocess.run(probe, env={**base, **env}, capture_output=True, timeout=30).returncode

    server = HTTPServer(("127.0.0.1", free_port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert run(PORT=str(free_port)) == 0
        assert run(AIP_HTTP_PORT=str(free_port)) == 0  # Vertex AI's port
        _Health.status = 503
        assert run(PORT=str(free_port)) != 0
    finally:
        _Health.status = 200
        server.shutdown()
        server.server_close()
    assert run(PORT=str(free_port)) != 0  # nothing listening


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest(docker):
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for must in (".git", ".venv", "_docs", "nbs", "**/__pycache__", ".pytest_cache", "data", "artifacts"):
        assert must in patterns, f".dockerignore should exclude {must}"

    def ignored(path: str) -> bool:
        hit = False
        for p in patterns:
            neg = p.startswith("!")
            pat = p.lstrip("!").strip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if any(fnmatch.fnmatch(x, pat) or (pat.startswith("**/") and fnmatch.fnmatch(x.split("/")[-1], pat[3:]))
                   for x in prefixes):
                hit = not neg
        return hit

    build_inputs = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "trainkit/__init__.py", "trainkit/assets",
                    docker["args"].get("REGISTRY") or "registry", "registry/CURRENT", "registry/versions/v1/manifest.json"]
    for path in build_inputs:
        assert not ignored(path), f".dockerignore drops {path}, which the image needs"
    for path in (".venv/bin/python", "trainkit/__pycache__/core.cpython-312.pyc", "nbs/index.ipynb", ".git/HEAD"):
        assert ignored(path), f".dockerignore should drop {path}"


# ---------------------------------------------------------------------------------------------------
# Documentation
def test_cloud_guide_says_what_was_verified_and_covers_the_three_platforms():
    text = CLOUD_DOC.read_text(encoding="utf-8")
    head = "\n".join(text.splitlines()[:16])
    assert "What was verified" in head and "*Not verified*" in head and "tests/test_container.py" in head, \
        "docs/cloud.md must say at the top what the container test verified and what no one has tried"
    for needle in ("/ping", "/invocations", "8080", "PORT=8080", "ECR",  # SageMaker
                   "AIP_HTTP_PORT", "/predict/batch", "--container-health-route", "--container-predict-route",
                   "--container-ports", "Artifact Registry", "gcloud ai models upload",  # Vertex AI
                   "liveness_route", "readiness_route", "scoring_route", "az ml online-deployment create"):  # Azure ML
        assert needle in text, f"docs/cloud.md does not mention {needle}"


def test_deploy_readme_explains_every_panel(dashboard):
    text = DEPLOY_README.read_text(encoding="utf-8")
    for p in panels(dashboard):
        assert p["title"] in text, f"deploy/README.md does not explain the panel {p['title']!r}"
    for cmd in ("promtool check config", "trainkit serve", "prometheus", "grafana"):
        assert cmd in text, f"deploy/README.md should show {cmd!r}"
