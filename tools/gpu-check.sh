#!/usr/bin/env bash
# shellcheck disable=SC2329  # the step functions are exported and run through `bash -c`
# GPU checks, run on the lent GPU machine (Python 3.12, torch with CUDA, no network) from the repo root:
#     bash tools/gpu-check.sh
# with $OUT set to a folder whose files come back, and the wheels from tools/fetch-gpu-wheels.sh in .whl/.
# Writes (8 files, none in subfolders): $OUT/summary.txt (exit code and seconds of each step), install.log, env.txt,
# bench-gpu.log, bench-gpu.json, gpu-profile.txt, nbdev-test-gpu.log (with the GPU cell's table of Step 3 at its end),
# pytest-gpu.log. Every step runs under `timeout`, none stops the others; the whole script ends within about
# 9 minutes (limits below, each can be set from outside).
# Exit status: 0 if every step passed, else 1.
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT"
export PY=${PY:-python3} SITE=${SITE:-/tmp/site}
T_INSTALL=${T_INSTALL:-60}
T_ENV=${T_ENV:-45}
T_NBDEV=${T_NBDEV:-180}
T_PYTEST=${T_PYTEST:-120}
T_BENCH=${T_BENCH:-240}
T_PROFILE=${T_PROFILE:-90}
T_CELL=${T_CELL:-90}
SUMMARY=$OUT/summary.txt
T0=$(date +%s)
fail=0
echo "gpu-check $(date -u +%FT%TZ) host=$(hostname 2>/dev/null || uname -n) repo=$ROOT commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')" >"$SUMMARY"

# step NAME LIMIT_S LOG CMD...: run CMD under timeout, output to LOG, one line into summary.txt
step() {
  local name=$1 limit=$2 log=$3 s rc
  shift 3
  s=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  # bash -c so that CMD may be one of the exported functions below
  timeout -k 10 "$limit" bash -c '"$@"' bash "$@" >>"$log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || fail=1
  local note=""
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && note=" TIMEOUT after ${limit}s"
  printf '%-12s rc=%-3s %4ss%s\n' "$name" "$rc" "$(( $(date +%s) - s ))" "$note" >>"$SUMMARY"
  echo "   rc=$rc$note"
  tail -n 3 "$log" | sed 's/^/   | /'
}

# ---- 1. install the carried wheels into $SITE, and trainkit itself (editable) into the machine's python
install_wheels() {
  shopt -s nullglob
  local whl=(.whl/*.whl)
  if [ ${#whl[@]} -eq 0 ]; then echo "no wheels in .whl/: run tools/fetch-gpu-wheels.sh here and carry .whl"; return 1; fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${whl[@]}" || return 1
  # .whl/fallback/ holds packages the machine has (typing-extensions, idna, pytest, ...): install one
  # only where the machine's own version misses what a carried wheel or pyproject.toml asks for.
  local round extra
  for round in 1 2 3 4; do
    extra=$(PYTHONPATH="$SITE" "$PY" - "$SITE" .whl/fallback "$round" <<'EOF'
import os, sys, tomllib
from pathlib import Path
from importlib.metadata import distributions, version, PackageNotFoundError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as cn, parse_wheel_filename
site, fb, last = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == '4'
fallback = {parse_wheel_filename(w.name)[0]: (parse_wheel_filename(w.name)[1], w) for w in fb.glob('*.whl')}
skip = {cn(x) for x in os.environ.get('SKIP', 'jupyterlab jupytext').split()}
# what pyproject.toml asks for: dependencies and the extras in GPU_EXTRAS, trainkit[...] expanded
proj = tomllib.loads(Path('pyproject.toml').read_text())['project']
opt, todo, done = proj.get('optional-dependencies', {}), os.environ.get('GPU_EXTRAS', 'course test tune serve').split(), set()
reqs = [(r, 'pyproject.toml') for r in proj.get('dependencies', [])]
while todo:
    e = todo.pop()
    if e in done or e not in opt: continue
    done.add(e)
    for r in opt[e]:
        if cn(Requirement(r).name) == cn(proj['name']): todo += list(Requirement(r).extras)
        else: reqs.append((r, f'trainkit[{e}]'))
reqs += [(r, d.metadata['Name']) for d in distributions(path=[str(site)]) for r in d.requires or []]
pick, bad = set(), []
for r, who in reqs:
    q = Requirement(r)
    if (q.marker and not q.marker.evaluate({'extra': ''})) or cn(q.name) in skip: continue
    try: have = version(q.name)
    except PackageNotFoundError: have = None
    if have is not None and q.specifier.contains(have, prereleases=True): continue
    n = cn(q.name)
    if n in fallback and q.specifier.contains(fallback[n][0], prereleases=True) and not last:
        pick.add(str(fallback[n][1])); print(f'fallback: {who} needs {q}, machine has {have}', file=sys.stderr)
    else:
        bad.append(f'{who} needs {q}, found {have}')
if not pick:
    for b in sorted(set(bad)): print('UNMET:', b, file=sys.stderr)
    print(f'requirements: {len(set(bad))} unmet', file=sys.stderr)
print('\n'.join(sorted(pick)))
EOF
    ) || return 1
    [ -n "$extra" ] || break
    # shellcheck disable=SC2086  # one wheel path per line, no spaces
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $extra || return 1
  done
  # tests/test_cli.py runs the `trainkit` console script beside sys.executable: install the project
  # (editable, no deps, offline), else write the script that its entry point would make.
  local bindir
  bindir=$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')
  if [ ! -e "$bindir/trainkit" ]; then
    if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir -e . ; then
      echo "trainkit installed editable into $("$PY" -c 'import sys; print(sys.prefix)')"
    else
      printf '#!%s\nimport sys\nfrom trainkit.cli import main\nsys.exit(main())\n' "$("$PY" -c 'import sys; print(sys.executable)')" >"$bindir/trainkit" \
        && chmod +x "$bindir/trainkit" && echo "wrote the console script $bindir/trainkit (editable install failed)"
    fi
  fi
  local dists=("$SITE"/*.dist-info)
  echo "installed into $SITE: ${#dists[@]} distributions"
}
export -f install_wheels
step install "$T_INSTALL" "$OUT/install.log" install_wheels
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"

# course data and artifacts in fresh folders under /tmp
TK=$(mktemp -d /tmp/trainkit-gpu.XXXXXX)
export TRAINKIT_DATA=$TK/data TRAINKIT_ARTIFACTS=$TK/artifacts

# ---- 2. environment report
env_report() {
  echo "## nvidia-smi"
  timeout 20 nvidia-smi || echo "(nvidia-smi failed: rc=$?)"
  echo; echo "## uname"; uname -a
  echo; echo "## python"
  "$PY" - <<'EOF'
import sys, json, importlib, importlib.metadata as md
print(sys.executable, sys.version)
for name in ['torch', 'numpy', 'pandas', 'scikit-learn', 'scipy', 'statsmodels', 'pytest', 'hypothesis',
             'typing_extensions', 'pandera', 'pydantic', 'nbdev', 'execnb', 'fastcore', 'ipython', 'ipywidgets',
             'platformdirs', 'palmerpenguins', 'requests', 'lxml', 'optuna', 'fastapi', 'skops', 'onnx', 'onnxruntime']:
    try: print(f'{name:18} {md.version(name):14} {md.distribution(name)._path}')
    except Exception as e: print(f'{name:18} MISSING ({e!r})')
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
if torch.cuda.is_available():
    print('device', torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
import trainkit, trainkit.core
print('trainkit from', trainkit.__file__)
print(json.dumps(trainkit.core.environment(), indent=1))
bad = []
for m in ['pandera', 'pydantic', 'IPython', 'execnb', 'nbdev', 'ipywidgets', 'statsmodels.api', 'platformdirs',
          'palmerpenguins', 'lxml', 'requests', 'hypothesis', 'pytest', 'trainkit.data', 'trainkit.clean',
          'trainkit.label', 'trainkit.prep', 'trainkit.datasets', 'trainkit.cli', 'optuna', 'fastapi', 'uvicorn',
          'skops.io', 'httpx', 'prometheus_client', 'onnx', 'onnxruntime', 'safetensors']:
    try: importlib.import_module(m)
    except Exception as e: bad.append(f'{m}: {e!r}')
print('imports:', 'all ok' if not bad else '\n  '.join(['FAILED'] + bad))
sys.exit(1 if bad else 0)
EOF
}
export -f env_report
step env "$T_ENV" "$OUT/env.txt" env_report

# ---- 3. benchmark first (the numbers this machine is lent for), where there is one
if [ -f bench/train_speed.py ]; then
  step bench "$T_BENCH" "$OUT/bench-gpu.log" "$PY" bench/train_speed.py --json "$OUT/bench-gpu.json"
else
  echo "bench        skipped (no bench/train_speed.py)" >>"$SUMMARY"
fi
# where the eager Learner's time goes against the plain loop, and CUDA-graph mode's set-up taken apart
step profile "$T_PROFILE" "$OUT/gpu-profile.txt" "$PY" bench/gpu_profile.py

# ---- 4. every notebook, GPU cells included
nbtest() {
  if command -v nbdev-test >/dev/null; then
    nbdev-test --flags gpu --timing
  else
    "$PY" -c 'import sys; from nbdev.test import nbdev_test; sys.argv = ["nbdev-test"] + sys.argv[1:]; nbdev_test()' --flags gpu --timing
  fi
}
export -f nbtest
step nbdev-test "$T_NBDEV" "$OUT/nbdev-test-gpu.log" nbtest

# ---- 4b. Step 3's GPU cells in full (20,000 images; their table is what the chapter quotes), appended to that log
gpu_cell() {
  (cd nbs && TRAINKIT_FAST=1 "$PY" - <<'EOF'
from fastcore.nbio import read_nb
from execnb.shell import CaptureShell
nb = read_nb("03_training.ipynb")
CaptureShell().run_all(nb, exc_stop=True, preproc=lambda c: "nbdev_export" in c.source)
for c in nb.cells:
    if c.cell_type == "code" and "gpu_table" in c.source:
        for o in c.get("outputs", []):
            t = o.get("text") or o.get("data", {}).get("text/plain", "")
            print("".join(t) if isinstance(t, list) else t)
EOF
  )
}
export -f gpu_cell
step gpu-cell "$T_CELL" "$OUT/nbdev-test-gpu.log" gpu_cell

# ---- 5. tests/ (the GPU-only tests in tests/test_gpu.py run here). The `slow` tests are the service's CPU-side
# reliability runs (10,000-request load test, schemathesis, a real Prometheus): CI runs them; here they would only
# spend the device time.
step pytest "$T_PYTEST" "$OUT/pytest-gpu.log" "$PY" -m pytest tests -q -p no:cacheprovider -m "not slow"


echo "total        $(( $(date +%s) - T0 ))s, $([ $fail -eq 0 ] && echo 'all passed' || echo 'FAILURES')" >>"$SUMMARY"
rm -rf "$TK"
echo; cat "$SUMMARY"
exit $fail
