"""Tests for the `trainkit` command (trainkit.cli): the installed console script and `main()` in-process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainkit.cli import Config, main
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
    assert summary["deployed"] == {"registry": str(registry), "version": "v1", "promoted": True, "previous": None}
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
