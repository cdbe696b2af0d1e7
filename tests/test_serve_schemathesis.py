"""Schemathesis against the live service's OpenAPI schema: over a thousand generated requests (valid and
invalid), with every check on — no server errors, every status, content type and body as documented."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving import make_registry
from trainkit.serve import background, create_app

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors_or_schema_violations(tmp_path, penguin_learner):
    reg = make_registry(tmp_path / "registry", penguin_learner)
    with background(create_app(reg, api_key="st-key")) as url:
        r = subprocess.run([str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "300",
                            "--seed", "20261126", "--workers", "2", "--header", "X-API-Key: st-key", "--no-color"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache stays out of the repo
    out = r.stdout + r.stderr
    tail = out[-3000:]
    assert r.returncode == 0, tail
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", out).groups())
    assert generated >= 1000 and passed == generated, tail
    assert "No issues found" in out, tail
    assert re.search(r"Tested: 8\b", out), tail  # every operation, the prediction endpoints among them
    print(f"schemathesis: {generated} generated, {passed} passed")
