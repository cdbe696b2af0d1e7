"""Tests for `trainkit doctor` (trainkit.doctor, chapter 00a_setup): each check fails when its problem is there.

Problems are simulated, never caused: every check looks packages up through `doctor.version_of` and the widget
extension through `doctor.labextension_dirs`, so monkeypatching those two simulates a missing or mismatched package.
The real environment (CI's, built by `make setup`) must pass: exit status 0. Its answers are checked against the
tools a learner would otherwise run: `pip list` and `jupyter labextension list`.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import trainkit.doctor as doc
from trainkit.cli import main

BIN = Path(sys.executable).parent
STATUSES = {"ok", "warn", "fail", "info"}


def missing(*names):
    "A version_of that reports `names` as not installed and everything else as it really is."
    real = doc.version_of
    return lambda dist: None if dist in names else real(dist)


def test_this_environment_can_run_the_course():
    report = doc.doctor()
    assert report.ok and report.exit_code == 0, str(report)
    names = [c.name for c in report.checks]
    for name in ("python", "torch", "device", "jupyter", "widgets", "dependencies", "extra course", "pip", "folders"):
        assert name in names, names
    assert report["widgets"].status == "ok", report["widgets"]
    assert "The course can run here" in str(report)


def test_script_exits_0_here_and_json_has_the_schema():
    r = subprocess.run([str(BIN / "trainkit"), "doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert set(d) == {"trainkit", "python", "ok", "exit_code", "checks"}, d.keys()
    assert d["ok"] is True and d["exit_code"] == 0
    for c in d["checks"]:
        assert set(c) == {"name", "status", "found", "fix"} and c["status"] in STATUSES, c
        assert all(isinstance(v, str) for v in c.values()), c
    assert [c["name"] for c in d["checks"]][:3] == ["python", "torch", "device"]
    text = subprocess.run([str(BIN / "trainkit"), "doctor"], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "ok    torch" in text.stdout, text.stdout


def test_missing_torch_fails_with_the_cpu_install_command(monkeypatch, capsys):
    monkeypatch.setattr(doc, "version_of", missing("torch"))
    assert main(["doctor"]) == 1  # the command's exit status: the course cannot run
    out = capsys.readouterr().out
    assert re.search(r"fail\s+torch\s+not installed", out), out
    assert "install torch --index-url https://download.pytorch.org/whl/cpu" in out, out
    assert "The course cannot run here: fix torch, device" in out, out
    assert main(["doctor", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is False and d["exit_code"] == 1
    assert {c["name"]: c["status"] for c in d["checks"]}["torch"] == "fail"


def test_missing_extra_package_gives_the_exact_command(monkeypatch):
    monkeypatch.setattr(doc, "version_of", missing("optuna"))
    tune = doc.doctor()["extra tune"]
    assert tune.status == "warn" and "optuna" in tune.found and "04_tuning" in tune.found, tune
    assert tune.fix == doc.install_command("tune")
    # from a checkout: the editable install of the extra; from a wheel: the extra of the published package
    assert re.fullmatch(r'\S+ -m pip install -e "[^"]*\[tune\]"', tune.fix), tune.fix
    monkeypatch.setattr(doc, "checkout", lambda: None)
    assert doc.install_command("tune") == f'{doc.pip_command()} install "trainkit[tune]"'


def test_missing_course_or_core_package_means_the_course_cannot_run(monkeypatch):
    monkeypatch.setattr(doc, "version_of", missing("matplotlib", "pandas"))
    report = doc.doctor()
    assert report.exit_code == 1
    core, course = report["dependencies"], report["extra course"]
    assert core.status == "fail" and core.fix == f'{doc.pip_command()} install "pandas>=2.2"', core
    assert course.status == "fail" and "matplotlib" in course.found and course.fix.endswith('[course]"'), course


def test_widget_extension_absent_says_widgets_will_not_render(monkeypatch):
    monkeypatch.setattr(doc, "labextension_dirs", lambda: [])
    w = doc.check_widgets()
    assert w.status == "warn" and "will not render" in w.found, w
    assert "install --force-reinstall jupyterlab_widgets==" in w.fix and "restart JupyterLab" in w.fix, w
    assert doc.doctor().exit_code == 0  # widgets missing: a warning, the course still runs


def test_widget_halves_that_do_not_match(monkeypatch):
    real = doc.version_of
    monkeypatch.setattr(doc, "version_of", lambda d: "7.8.1" if d == "ipywidgets" else real(d))
    w = doc.check_widgets()
    assert w.status == "warn" and "do not match" in w.found and '"jupyterlab_widgets>=3"' in w.fix, w
    monkeypatch.setattr(doc, "version_of", missing("ipywidgets"))
    w = doc.check_widgets()
    assert w.status == "warn" and "will not render" in w.found and w.fix.endswith('[course]"'), w


def test_another_environments_jupyter_on_the_path(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(doc.shutil, "which", lambda cmd: "/usr/bin/jupyter" if cmd == "jupyter" else real(cmd))
    j = doc.check_jupyter()
    assert j.status == "warn" and "/usr/bin/jupyter" in j.found and j.fix == f"{Path(sys.prefix) / 'bin' / 'jupyter'} lab", j


def test_old_pip_gets_the_upgrade_command(monkeypatch):
    real = doc.version_of
    monkeypatch.setattr(doc, "version_of", lambda d: "21.2.4" if d == "pip" else real(d))
    p = doc.check_pip()
    assert p.status == "warn" and p.fix == f"{doc.pip_command()} install --upgrade pip", p
    monkeypatch.setattr(doc, "version_of", lambda d: "21.10" if d == "pip" else real(d))
    assert doc.check_pip().status == "ok"  # 21.10 is newer than 21.3: compared as numbers


def test_unwritable_folder_and_unknown_device_fail(monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TRAINKIT_DATA", str(blocker / "data"))
    f = doc.check_folders()
    assert f.status == "fail" and "TRAINKIT_DATA" in f.fix, f
    monkeypatch.delenv("TRAINKIT_DATA")
    monkeypatch.setenv("TRAINKIT_DEVICE", "cuda:7")
    d = doc.check_device()
    assert d.status == "fail" and "TRAINKIT_DEVICE" in d.fix, d


def test_cpu_build_with_an_nvidia_gpu_present_warns(monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.version.cuda or torch.cuda.is_available():
        pytest.skip("a CUDA build of torch: the warning is for CPU-only builds")
    real = shutil.which
    monkeypatch.setattr(doc.shutil, "which", lambda cmd: "/usr/bin/nvidia-smi" if cmd == "nvidia-smi" else real(cmd))
    d = doc.check_device()
    assert d.status == "warn" and "CPU-only build" in d.found and "download.pytorch.org/whl/cu" in d.fix, d


def test_extras_come_from_trainkits_own_metadata(monkeypatch):
    "In a checkout the doctor reads pyproject.toml; installed from a wheel, the metadata: both know the same extras."
    from_checkout = doc.requirements()
    monkeypatch.setattr(doc, "checkout", lambda: None)
    from_metadata = doc.requirements()
    for extra in ("", "course", "tune", "serve"):
        assert extra in from_checkout and extra in from_metadata, (from_checkout.keys(), from_metadata.keys())
    assert {doc.dist_name(r) for r in from_metadata[""]} == {doc.dist_name(r) for r in from_checkout[""]}
    assert doc.dist_name("scikit-learn>=1.4") == "scikit-learn" and doc.dist_name("xgboost-cpu>=2.1,<3.1") == "xgboost-cpu"


def test_versions_agree_with_pip_list():
    listed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, timeout=120).stdout)}
    for dist in ("torch", "numpy", "jupyterlab", "ipywidgets", "jupyterlab-widgets", "pip"):
        assert doc.version_of(dist) == listed.get(dist), dist


def test_widget_extension_agrees_with_jupyter_labextension_list():
    jupyter = BIN / "jupyter"
    if not jupyter.exists():
        pytest.skip("no jupyter in this environment")
    r = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=120)
    text = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)
    m = re.search(r"@jupyter-widgets/jupyterlab-manager v(\S+) enabled", text)
    dirs = doc.labextension_dirs()
    assert bool(m) == bool(dirs), (text, dirs)
    if m:
        assert json.loads((dirs[0] / "package.json").read_text())["version"] == m.group(1)
