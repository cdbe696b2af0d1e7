"""Tests for the `trainkit` command (trainkit.cli): the installed console script and `main()` in-process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import trainkit.cli as cli_module
from trainkit.cli import CACHED, STEPS, Config, find_version, main, run, step_key
from trainkit.data import penguins_csv
from trainkit.registry import Registry

SCRIPT = Path(sys.executable).parent / "trainkit"
OUTPUTS = {"summary.json", "cleaning_report.md", "preprocessor.json", "model.pt", "evaluation"}


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    "Fast mode: the pipeline's tuning step runs 3 trials instead of 8 (the steps are the same)."
    monkeypatch.setenv("TRAINKIT_FAST", "1")


# ------------------------------------------------------------------------------------------- subprocesses

@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Run the installed `trainkit` script a few ways, all at once (each start pays the torch import).

    Returns name -> SimpleNamespace(rc, out, err) plus `root`, the folder they ran in."""
    assert SCRIPT.is_file(), f"console script not installed at {SCRIPT}"
    root = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINKIT_DEVICE", "TRAINKIT_FAST")}
    env["TRAINKIT_FAST"] = "1"  # 3 tuning trials instead of 8
    env.update(TRAINKIT_DATA=str(root / "data"), TRAINKIT_ARTIFACTS=str(root / "artifacts"), PYTHONWARNINGS="ignore")
    (root / "unknown_key.toml").write_text("[split]\nseed = 1\nseeds = 3\n", encoding="utf-8")
    jobs = {
        "run": ["run", "--out", str(root / "out"), "--quiet"],
        "config": ["config"],
        "env": ["env"],
        "bad_config": ["run", "--config", str(root / "unknown_key.toml"), "--out", str(root / "never1"), "--quiet"],
    }
    procs = {k: subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env, cwd=root) for k, args in jobs.items()}
    res = {}
    for k, p in procs.items():
        out, err = p.communicate(timeout=180)
        res[k] = SimpleNamespace(rc=p.returncode, out=out, err=err)
    res["root"] = root
    return res


def assert_one_line_error(err: str, *fragments: str):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("trainkit: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, err)


def test_script_run_writes_artifacts_and_prints_summary(cli):
    r, out = cli["run"], cli["root"] / "out"
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err
    assert {p.name for p in out.iterdir()} == OUTPUTS
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["rows"] == {"raw": 344, "clean": summary["rows"]["clean"]}
    assert 300 < summary["rows"]["clean"] <= 344
    sizes = summary["splits"]
    assert set(sizes) == {"train", "valid", "test"} and sum(sizes.values()) == summary["rows"]["clean"]
    assert summary["leakage"] == {"rows": 0, "groups": 0}
    assert summary["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert summary["config"] == {**asdict(Config()), "output": {**asdict(Config())["output"], "dir": str(out)}}
    assert "device" in summary["environment"]
    # the model was exported into the default registry (under TRAINKIT_ARTIFACTS), verified and promoted
    registry = cli["root"] / "artifacts" / "registry"
    assert summary["deployed"] == {"registry": str(registry), "version": "v1", "promoted": True, "previous": None,
                                   "reused": False}
    assert summary["skipped"] == [] and summary["automl"] is None
    assert Registry(registry).current() == "v1" and Registry(registry).load().classes == summary["classes"]
    assert f"deployed   v1 -> {registry} (promoted)" in r.out
    assert f"serve it:  trainkit serve --registry {registry}" in r.out
    curl = next(l for l in r.out.splitlines() if l.startswith("then:      curl -s 127.0.0.1:8000/predict"))
    record = json.loads(curl.split(" -d '", 1)[1].rstrip("'"))  # a real raw record the service accepts
    assert set(record) == {c["name"] for c in Registry(registry).load().manifest["input"]["columns"]}
    # the printed summary says the same
    assert f"trainkit run -> {out}" in r.out
    assert "collected  344 rows x 17 columns from default" in r.out
    assert f"cleaned    344 -> {summary['rows']['clean']} rows" in r.out
    assert f"split      train {sizes['train']}, valid {sizes['valid']}, test {sizes['test']}" in r.out
    assert "leakage: 0 rows, 0 birds shared" in r.out
    assert "wrote cleaning_report.md, evaluation, model.pt, preprocessor.json, summary.json" in r.out
    assert (out / "evaluation" / "report.md").is_file() and "test       accuracy" in r.out
    # the other two files are what they claim to be
    report = (out / "cleaning_report.md").read_text(encoding="utf-8")
    assert report.startswith(f"Cleaning: 344 rows in, {summary['rows']['clean']} rows out.")
    pre = json.loads((out / "preprocessor.json").read_text(encoding="utf-8"))
    assert pre["fitted"]["feature_names_out_"] == summary["features"]


def test_script_config_prints_default_toml(cli, tmp_path):
    r = cli["config"]
    assert r.rc == 0 and r.err == ""
    assert r.out == Config().to_toml()
    for section in ("[data]", "[split]", "[output]"):
        assert section in r.out
    f = tmp_path / "defaults.toml"
    f.write_text(r.out, encoding="utf-8")
    assert Config.load(f) == Config()


def test_script_env_prints_json_with_device(cli):
    r = cli["env"]
    assert r.rc == 0, r.err
    info = json.loads(r.out)
    assert info["device"].split(":")[0] in {"cpu", "cuda", "mps"}
    assert {"trainkit", "python", "torch", "numpy", "threads"} <= set(info)


def test_script_bad_config_exits_2_with_one_line(cli):
    r = cli["bad_config"]
    assert r.rc == 2 and r.out == ""
    assert_one_line_error(r.err, "unknown_key.toml", "'seeds'", "[split]")
    assert not (cli["root"] / "never1").exists()


# --------------------------------------------------------------------------------------------- in-process

def run_main(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_config_output_round_trips_through_config_flag(capsys, tmp_path):
    rc, toml, _ = run_main(capsys, "config")
    assert rc == 0
    f = tmp_path / "trainkit.toml"
    f.write_text(toml, encoding="utf-8")
    out = tmp_path / "run"
    rc, printed, err = run_main(capsys, "run", "--config", str(f), "--out", str(out), "--quiet")
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["config"] == {**asdict(Config()), "output": {**asdict(Config())["output"], "dir": str(out)}}
    assert {p.name for p in out.iterdir()} == OUTPUTS


def test_edited_config_round_trips_and_is_used(capsys, tmp_path):
    cfg = Config()
    cfg.split.seed, cfg.split.fractions, cfg.split.groups = 7, [0.6, 0.2, 0.2], ""
    cfg.output.dir = str(tmp_path / "from_config")
    f = tmp_path / "edited.toml"
    f.write_text(cfg.to_toml(), encoding="utf-8")
    assert Config.load(f) == cfg
    rc, printed, err = run_main(capsys, "run", "--config", str(f), "--quiet")  # output dir comes from the file
    assert rc == 0, err
    summary = json.loads((tmp_path / "from_config" / "summary.json").read_text(encoding="utf-8"))
    assert summary["config"]["split"] == {"fractions": [0.6, 0.2, 0.2], "seed": 7, "groups": ""}
    assert "groups" not in summary["leakage"]
    n = summary["rows"]["clean"]
    assert abs(summary["splits"]["train"] - 0.6 * n) <= 2


def test_seed_flag_overrides_config(capsys, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[split]\nseed = 3\n", encoding="utf-8")
    rc, _, err = run_main(capsys, "run", "--config", str(f), "--seed", "11", "--out", str(tmp_path / "o"), "--quiet")
    assert rc == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["config"]["split"]["seed"] == 11


def test_run_from_csv_source(capsys, tmp_path):
    lines = penguins_csv().read_text(encoding="utf-8").splitlines(keepends=True)
    csv = tmp_path / "half.csv"
    csv.write_text(lines[0] + "".join(lines[1::2]), encoding="utf-8")  # every other record: 172
    out = tmp_path / "csv_run"
    rc, printed, err = run_main(capsys, "run", "--source", str(csv), "--out", str(out), "--quiet")
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["rows"]["raw"] == 172
    assert summary["config"]["data"]["source"] == str(csv)
    assert f"collected  172 rows x 17 columns from {csv}" in printed
    assert {p.name for p in out.iterdir()} == OUTPUTS


def test_run_from_missing_csv_exits_2(capsys, tmp_path):
    rc, out, err = run_main(capsys, "run", "--source", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "o"),
                            "--quiet")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "absent.csv", "does not exist")


def test_error_inside_a_step_gets_its_own_line_with_progress_on(capsys, tmp_path):
    "Without --quiet the error must not be glued onto the end of the progress bar's line."
    rc, out, err = run_main(capsys, "run", "--source", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "o"))
    assert rc == 2 and out == ""
    assert "Traceback" not in err
    assert any(line.startswith("trainkit: error: ") and "absent.csv" in line for line in err.split("\n")), repr(err)


def test_progress_bar_leaves_the_terminal_clean(capsys, tmp_path):
    "A run's progress output is either absent (the bar is `delay`ed 1 s) or finished with a newline."
    rc, out, err = run_main(capsys, "run", "--out", str(tmp_path / "o"))
    assert rc == 0
    assert err == "" or err.endswith("\n"), repr(err[-200:])


@pytest.mark.parametrize("text, fragments", [
    ("[split]\nseeds = 3\n", ["'seeds'", "[split]", "unknown key"]),
    ("[data]\nsource = 'default'\nformat = 'csv'\n", ["'format'", "[data]"]),
    ("[model]\nlayers = 3\n", ["[model]", "unknown section"]),
    ("seed = 3\n", ["[seed]", "unknown section"]),
    ("[split]\nseed = \"42\"\n", ["[split] seed", "int"]),
    ("[split]\nseed = 4.5\n", ["[split] seed", "int"]),
    ("[split]\nfractions = 0.7\n", ["[split] fractions", "list"]),
    ("[output]\ndir = 3\n", ["[output] dir", "str"]),
    ("[split\nseed = 3\n", ["not valid TOML"]),
    ("[split]\nseed = \n", ["not valid TOML"]),
])
def test_bad_config_exits_2_naming_the_problem(capsys, tmp_path, text, fragments):
    f = tmp_path / "bad.toml"
    f.write_text(text, encoding="utf-8")
    rc, out, err = run_main(capsys, "run", "--config", str(f), "--out", str(tmp_path / "o"), "--quiet")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "bad.toml", *fragments)
    assert not (tmp_path / "o").exists()


def test_missing_config_file_exits_2(capsys, tmp_path):
    rc, out, err = run_main(capsys, "run", "--config", str(tmp_path / "nothere.toml"), "--quiet")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "nothere.toml", "does not exist")


def test_config_fractions_of_wrong_element_type_exit_2(capsys, tmp_path):
    "A list of the wrong things is a wrong type too: a clean error, not a traceback."
    f = tmp_path / "bad.toml"
    f.write_text('[split]\nfractions = ["a", "b", "c"]\n', encoding="utf-8")
    rc, out, err = run_main(capsys, "run", "--config", str(f), "--out", str(tmp_path / "o"), "--quiet")
    assert rc == 2
    assert_one_line_error(err, "fractions")


def test_config_with_invalid_values_exit_2(capsys, tmp_path):
    "Right types, impossible values: the step that rejects them reports it as a one-line error."
    f = tmp_path / "c.toml"
    f.write_text("[split]\nfractions = [0.5, 0.2, 0.2]\n", encoding="utf-8")
    rc, _, err = run_main(capsys, "run", "--config", str(f), "--out", str(tmp_path / "o"), "--quiet")
    assert rc == 2
    assert_one_line_error(err, "sum to 0.9")
    f.write_text("[split]\ngroups = \"bird\"\n", encoding="utf-8")
    rc, _, err = run_main(capsys, "run", "--config", str(f), "--out", str(tmp_path / "o"), "--quiet")
    assert rc == 2
    assert_one_line_error(err, "'bird'")


def test_env_in_process_and_bad_device(capsys, monkeypatch):
    rc, out, _ = run_main(capsys, "env")
    assert rc == 0 and "device" in json.loads(out)
    monkeypatch.setenv("TRAINKIT_DEVICE", "tpu")
    rc, out, err = run_main(capsys, "env")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "'tpu'")


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    assert "usage: trainkit" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- the step cache

QUICK = "[tune]\ntrials = 0\n\n[train]\nepochs = 3\n"


def quick_run(capsys, tmp_path, out: str, *extra, config: str = QUICK, cache="cache", registry="registry"):
    "One in-process run with a quick config; returns (exit code, printed, summary or None)."
    f = tmp_path / f"{out}.toml"
    f.write_text(config, encoding="utf-8")
    rc, printed, err = run_main(capsys, "run", "--config", str(f), "--out", str(tmp_path / out), "--registry",
                                str(tmp_path / registry), "--cache", cache if cache == "none" else str(tmp_path / cache),
                                "--quiet", *extra)
    assert rc == 0 or "error" in err, err
    path = tmp_path / out / "summary.json"
    return rc, printed, json.loads(path.read_text(encoding="utf-8")) if rc == 0 else None


def test_rerun_skips_every_cached_step_and_adds_no_second_version(capsys, tmp_path):
    _, _, first = quick_run(capsys, tmp_path, "a")
    rc, printed, again = quick_run(capsys, tmp_path, "b")
    assert rc == 0 and first["skipped"] == [] and again["skipped"] == list(CACHED)
    assert "  skipped    automl, tune, train, evaluate: inputs unchanged" in printed
    assert "3 epochs (from the cache)" in printed
    for name in ("model.pt", "preprocessor.json", "evaluation/report.json", "cleaning_report.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert {p.name for p in (tmp_path / "b").iterdir()} == OUTPUTS
    assert again["test"] == first["test"] and again["validation"] == first["validation"]
    assert again["deployed"] == {**first["deployed"], "reused": True, "previous": "v1"}
    assert "(already there: the same weights and preprocessing; CURRENT is v1)" in printed
    assert Registry(tmp_path / "registry").names() == ["v1"]


def test_a_changed_setting_reruns_only_the_steps_that_read_it(capsys, tmp_path):
    quick_run(capsys, tmp_path, "a")
    _, _, promote_off = quick_run(capsys, tmp_path, "b", config=QUICK + "\n[output]\npromote = false\n")
    assert promote_off["skipped"] == list(CACHED)  # [output] is read by no cached step
    _, _, more = quick_run(capsys, tmp_path, "c", config=QUICK.replace("epochs = 3", "epochs = 4"))
    assert more["skipped"] == ["automl", "tune"]  # train reads [train]; evaluate reads the new weights
    assert more["deployed"]["version"] == "v2" and not more["deployed"]["reused"]
    _, _, seed = quick_run(capsys, tmp_path, "d", "--seed", "7")
    assert seed["skipped"] == []  # the data changed: every step reads it


def test_force_reruns_every_step_to_the_same_result(capsys, tmp_path):
    _, _, first = quick_run(capsys, tmp_path, "a")
    _, _, forced = quick_run(capsys, tmp_path, "b", "--force")
    assert forced["skipped"] == [] and forced["test"] == first["test"]
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
    assert Registry(tmp_path / "registry").names() == ["v1"]  # the same model: found, not added again


def test_cache_none_runs_every_step_and_writes_no_cache(capsys, tmp_path):
    for out in ("a", "b"):
        _, _, summary = quick_run(capsys, tmp_path, out, cache="none")
        assert summary["skipped"] == []
    assert not (tmp_path / "none").exists() and not (tmp_path / "tk_artifacts" / "cache").exists()


def test_step_key_reads_only_what_the_step_reads(tmp_path, monkeypatch):
    cfg, other = Config(), Config()
    for c in (cfg, other):
        c.tune.trials, c.train.epochs = 0, 3
        c.output.dir, c.output.registry, c.output.cache = str(tmp_path / "o"), str(tmp_path / "r"), str(tmp_path / "c")
    ctx = run(cfg, progress=False)
    keys = {n: step_key(ctx, n) for n in CACHED}
    assert len(set(keys.values())) == len(CACHED) and all(len(k) == 64 for k in keys.values())
    other.output.promote, other.data.table = False, "elsewhere"  # read by no cached step
    assert all(step_key({**ctx, "cfg": other}, n) == k for n, k in keys.items())
    other.tune.budget_s = 5.0  # read by automl only
    assert [n for n in CACHED if step_key({**ctx, "cfg": other}, n) != keys[n]] == ["automl"]
    monkeypatch.setattr(cli_module, "code_sha256", lambda: "0" * 64)
    assert all(step_key(ctx, n) != k for n, k in keys.items())  # changed code: every step reruns


def test_find_version_finds_the_same_model_only(penguin_learner, tmp_path):
    registry = Registry(tmp_path / "reg")
    assert find_version(registry, penguin_learner) is None  # an empty registry
    registry.add(penguin_learner)
    assert find_version(registry, penguin_learner) == "v1"
    from trainkit.export import penguin_learner as train_penguin_mlp
    other = train_penguin_mlp(epochs=1)
    assert find_version(registry, other) is None


def test_automl_writes_a_leaderboard_and_the_bundle_stays_the_mlp(capsys, tmp_path):
    config = '[tune]\ntrials = 0\nfamilies = ["linear", "forest"]\nbudget_s = 1.5\n\n[train]\nepochs = 3\n'
    rc, printed, summary = quick_run(capsys, tmp_path, "a", config=config)
    assert rc == 0
    board = pd.read_csv(tmp_path / "a" / "leaderboard.csv")
    assert {"family", "params", "score", "fit_s", "predict_s"} <= set(board.columns) and len(board) >= 2
    assert set(board["family"]) <= {"linear", "forest"} and board["score"].is_monotonic_decreasing
    a = summary["automl"]
    assert a["best"]["family"] == board["family"][0] and a["trials"] == len(board) and a["metric"] == "accuracy"
    assert "  automl     " in printed and "the served model stays the MLP" in printed
    assert Registry(tmp_path / "registry").load().manifest["model"]["class"] == "MLP"
    assert {p.name for p in (tmp_path / "a").iterdir()} == OUTPUTS | {"leaderboard.csv"}
    _, _, again = quick_run(capsys, tmp_path, "b", config=config)  # cached: the very same leaderboard
    assert again["skipped"] == list(CACHED)
    assert (tmp_path / "a" / "leaderboard.csv").read_bytes() == (tmp_path / "b" / "leaderboard.csv").read_bytes()


def test_automl_unknown_family_exits_2(capsys, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[tune]\ntrials = 0\nfamilies = ["quantum"]\n', encoding="utf-8")
    rc, out, err = run_main(capsys, "run", "--config", str(f), "--out", str(tmp_path / "o"), "--quiet")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "families", "quantum")


# ------------------------------------------------------------------------- a run killed at any step

KILL_POINTS = [name for name, _ in STEPS] + [f"{name}:commit" for name in CACHED] + ["deploy:promote", "summary"]
KILL_CONFIG = "[tune]\ntrials = 1\nepochs = 2\n\n[train]\nepochs = 3\n"
COMPARED = ("model.pt", "preprocessor.json", "evaluation/report.json", "cleaning_report.md")


@pytest.mark.slow
def test_a_run_killed_at_any_step_reruns_to_the_same_result(capsys, tmp_path):
    """Kill a run with SIGKILL at every step (and inside the commits), rerun it: the same files as a run never killed,
    one registry version, promoted, and nothing half-written."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("SIGKILL is POSIX")
    cfg = tmp_path / "kill.toml"
    cfg.write_text(KILL_CONFIG, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TRAINKIT_DEVICE"}
    env.update(TRAINKIT_FAST="1", PYTHONWARNINGS="ignore")

    def args(where: Path) -> list[str]:
        return ["run", "--config", str(cfg), "--source", str(penguins_csv()), "--out", str(where / "out"),
                "--registry", str(where / "registry"), "--cache", str(where / "cache"), "--quiet"]

    for i in range(0, len(KILL_POINTS), 4):  # four processes at a time: each pays the torch import
        procs = {p: subprocess.Popen([str(SCRIPT), *args(tmp_path / p.replace(":", "-"))], env={**env, "TRAINKIT_KILL_AT": p},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for p in KILL_POINTS[i:i + 4]}
        for p, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == -signal.SIGKILL, (p, proc.returncode, err[-2000:])
            assert out == "", p  # killed before the summary was printed
    assert run_main(capsys, *args(tmp_path / "reference"))[0] == 0
    ref = tmp_path / "reference"
    ref_summary = json.loads((ref / "out" / "summary.json").read_text(encoding="utf-8"))
    for p in KILL_POINTS:
        where = tmp_path / p.replace(":", "-")
        rc, _, err = run_main(capsys, *args(where))
        assert rc == 0, (p, err)
        for name in COMPARED:
            assert (where / "out" / name).read_bytes() == (ref / "out" / name).read_bytes(), (p, name)
        summary = json.loads((where / "out" / "summary.json").read_text(encoding="utf-8"))
        for key in ("rows", "splits", "tuning", "validation", "test"):
            assert summary[key] == ref_summary[key], (p, key)
        registry = Registry(where / "registry")
        assert (registry.names(), registry.current()) == (["v1"], "v1"), p
        assert [q for q in (where / "out").rglob("*") if q.name.startswith(".")] == [], p  # no temporary file left
        entries = [q for q in (where / "cache").glob("*/*") if q.is_dir() and not q.name.startswith(".")]
        assert all((q / "results.json").is_file() for q in entries), p  # every committed entry is whole
        # a killed run's staging folder is removed by the next run of the same step (keys change if the code does)
        assert not [q for q in (where / "cache").glob("*/.*.tmp") if q.name.split(".")[1] in {e.name for e in entries}], p
