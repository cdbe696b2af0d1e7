#!/usr/bin/env bash
# Download into .whl/ the wheels that the lent GPU machine (Python 3.12, x86-64, no network) lacks, so that
# tools/gpu-check.sh can install them there with `pip install --no-index --no-deps --target`.
#
# Usage, from anywhere:  bash tools/fetch-gpu-wheels.sh          fetch what is missing, then check
#                        bash tools/fetch-gpu-wheels.sh --check  check .whl/ only, download nothing
# GPU_PACKAGES=FILE names another list of what the GPU machine has (default tools/gpu-machine-packages.txt).
#
# What is fetched: the closure (each wheel's Requires-Dist, no extras, Python 3.12 on Linux) of
#   - pyproject.toml's [project].dependencies and the extras in $GPU_EXTRAS (default "course test tune
#     serve"; trainkit[...] self-references expanded), less $SKIP (default: jupyterlab, jupytext, which
#     only a person at JupyterLab needs, and playwright: 52 MB, and the GPU machine has no Chromium for
#     the browser tests, which skip there; without it .whl/ stays under the 64 MiB a device call carries);
#   - ipython, which execnb (nbdev-test) runs the notebooks in;
# less every package the GPU machine already has (tools/gpu-machine-packages.txt, one name a line: torch, numpy,
# pandas, scipy, scikit-learn, matplotlib, statsmodels, pytest, hypothesis, requests, lxml...).
# Versions: the one installed in .venv where it has the package, else the newest that pip finds for the
# requirement; every wheel is for cp312 manylinux x86_64 (or pure Python).
#
# .whl/fallback/ gets packages the GPU machine HAS but that a carried wheel or pyproject.toml wants in a
# given version (typing-extensions>=4.16 for pydantic, ...). `.whl/*.whl` does not match them;
# tools/gpu-check.sh installs one only where the machine's own version falls short. Large packages
# ($NO_FALLBACK) never go there: a shortfall in one of those is only reported.
#
# Idempotent: a package with a wheel already in .whl/ (any version) is not fetched again, so each
# package has exactly one version. Delete .whl/ to start over, e.g. after the .venv's versions change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
export GPU_EXTRAS=${GPU_EXTRAS:-course test tune serve}
export SKIP=${SKIP:-jupyterlab jupytext playwright}
export NO_FALLBACK=${NO_FALLBACK:-torch numpy pandas scipy scikit-learn matplotlib statsmodels lxml pyarrow onnx onnxruntime tensorboard jax jaxlib triton}
export GPU_PACKAGES=${GPU_PACKAGES:-tools/gpu-machine-packages.txt}
CHECK_ONLY=0
[ "${1:-}" = "--check" ] && CHECK_ONLY=1
export CHECK_ONLY
mkdir -p .whl/fallback

"$PY" - <<'EOF'
import os, re, subprocess, sys, tomllib, zipfile
from importlib.metadata import version as local_version, PackageNotFoundError
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as cn, parse_wheel_filename

DEST, FB = Path('.whl'), Path('.whl/fallback')
check_only = os.environ['CHECK_ONLY'] == '1'
extras = os.environ['GPU_EXTRAS'].split()
skip = {cn(x) for x in os.environ['SKIP'].split()}
no_fallback = {cn(x) for x in os.environ['NO_FALLBACK'].split()}
listing = Path(os.environ['GPU_PACKAGES'])
if not listing.exists(): sys.exit(f'{listing} not found: it lists what the GPU machine has, one package a line')
gpu = {cn(l.strip()) for l in listing.read_text().splitlines() if l.strip() and not l.startswith('#')}
ENV = dict(python_version='3.12', python_full_version='3.12.3', sys_platform='linux', platform_system='Linux',
           platform_machine='x86_64', os_name='posix', implementation_name='cpython',
           platform_python_implementation='CPython', platform_release='', platform_version='')
PLATFORMS = ['manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
             'manylinux1_x86_64', 'any']

def applies(q, extra=''):
    return q.marker is None or q.marker.evaluate({**ENV, 'extra': extra})

def wheels(d):
    return {parse_wheel_filename(w.name)[0]: (parse_wheel_filename(w.name)[1], w) for w in sorted(d.glob('*.whl'))}

def requires(whl):
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r'[^/]+\.dist-info/METADATA', n))
        text = z.read(meta).decode()
    return [Requirement(l.split(':', 1)[1].strip()) for l in text.splitlines() if l.startswith('Requires-Dist:')]

def download(d, q):
    "Fetch one wheel for q: the .venv's version if it has one that fits, else pip's pick for the spec."
    try:
        v = local_version(q.name)
        spec = f'{q.name}=={v}' if q.specifier.contains(v, prereleases=True) else f'{q.name}{q.specifier}'
    except PackageNotFoundError:
        spec = f'{q.name}{q.specifier}'
    print(f'fetch {spec}' + ('  (fallback)' if d == FB else ''), flush=True)
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:', '--python-version', '3.12',
           '--implementation', 'cp', *[a for p in PLATFORMS for a in ('--platform', p)], '-d', str(d), spec]
    r = subprocess.run(cmd, capture_output=True, text=True)
    err = '\n'.join(l for l in (r.stdout + r.stderr).splitlines() if 'is ignored: it is neither' not in l)
    if r.returncode: print(err); return False
    return True

# the roots: pyproject's dependencies and chosen extras, trainkit[...] expanded
proj = tomllib.loads(Path('pyproject.toml').read_text())['project']
opt = proj.get('optional-dependencies', {})
roots, todo_extras, done_extras = list(proj.get('dependencies', [])), list(extras), set()
while todo_extras:
    e = todo_extras.pop()
    if e in done_extras: continue
    done_extras.add(e)
    if e not in opt: print(f'note  no extra [{e}] in pyproject.toml'); continue
    for r in opt[e]:
        q = Requirement(r)
        if cn(q.name) == cn(proj['name']): todo_extras += list(q.extras)
        else: roots.append(r)
roots.append('ipython')

ok = True
want = {}                 # name -> [(requirement, who)] for every requirement seen
queue = [(Requirement(r), 'pyproject.toml') for r in roots]
seen, done = set(), {}   # done: name -> extras whose requirements are queued ('' for none)
while queue:
    q, who = queue.pop(0)
    if not applies(q): continue
    n = cn(q.name)
    want.setdefault(n, []).append((q, who))
    if n in skip or n in gpu: seen.add(n); continue
    if n not in seen:
        seen.add(n)
        if n not in wheels(DEST) and (check_only or not download(DEST, q)):
            print(f'ERROR no wheel for {q} (wanted by {who})'); ok = False
    if n not in wheels(DEST): continue
    reqs = requires(wheels(DEST)[n][1])
    for e in [''] + sorted(q.extras):
        if e in done.setdefault(n, set()): continue
        done[n].add(e)
        queue += [(r, f'{n}[{e}]' if e else n) for r in reqs if applies(r, e) and (not e or not applies(r))]

# fallbacks: machine packages wanted in a given version, and what the fallbacks themselves want
tried, fb_seen = set(), set()
while True:
    for n, (v, w) in wheels(FB).items():
        if n in fb_seen: continue
        fb_seen.add(n)
        for r in requires(w):
            if applies(r) and (cn(r.name) in gpu or cn(r.name) in wheels(DEST)):
                want.setdefault(cn(r.name), []).append((r, f'{n} (fallback)'))
            elif applies(r): print(f'note  fallback {n} needs {r}, which is neither carried nor on the GPU machine')
    new = [n for n, reqs in sorted(want.items()) if n in gpu and n not in skip and n not in no_fallback
           and n not in tried and n not in wheels(FB) and any(q.specifier for q, _ in reqs)]
    if not new: break
    for n in new:
        tried.add(n)
        specs = [q for q, _ in want[n] if q.specifier]
        if check_only: print(f'note  no fallback wheel for {n} ({", ".join(map(str, specs))})'); continue
        q = Requirement(f'{n}{specs[0].specifier}')
        if not download(FB, q): print(f'WARN  no fallback wheel for {q}')

# check: one version each, cp312 tags, every requirement met by a carried wheel or the GPU machine
carried, fb = wheels(DEST), wheels(FB)
names = [parse_wheel_filename(w.name)[0] for w in DEST.glob('*.whl')]
for n in {x for x in names if names.count(x) > 1}: print(f'ERROR two versions of {n} in {DEST}/'); ok = False
for n, (v, w) in {**carried, **fb}.items():
    tags = parse_wheel_filename(w.name)[3]
    fits = [t for t in tags if (t.interpreter in ('py3', 'py312', 'cp312') or (t.abi == 'abi3' and t.interpreter in
            [f'cp3{i}' for i in range(2, 13)])) and t.abi in ('none', 'abi3', 'cp312')
            and (t.platform == 'any' or t.platform.startswith('manylinux') and t.platform.endswith('_x86_64'))]
    if not fits: print(f'ERROR {w.name}: not for cp312 on manylinux x86_64'); ok = False
    if n in carried and n in gpu: print(f'WARN  {w.name}: the GPU machine already has {n}')
    if n in carried and n not in seen: print(f'WARN  {w.name}: nothing needs it any more (delete it)')
    if n in fb and (n not in want or n in no_fallback): print(f'WARN  fallback/{w.name}: not wanted any more (delete it)')
for n, reqs in sorted(want.items()):
    for q, who in reqs:
        if n in carried:
            if not q.specifier.contains(carried[n][0], prereleases=True):
                print(f'ERROR {who} needs {q}, {DEST}/ has {carried[n][0]}'); ok = False
        elif n in gpu:
            if q.specifier and n in no_fallback:
                print(f'note  {who} needs {q}: the GPU machine has {n}, version checked there only')
            elif q.specifier and (n not in fb or not q.specifier.contains(fb[n][0], prereleases=True)):
                print(f'WARN  {who} needs {q}: no fallback wheel fits')
        elif n not in skip:
            print(f'ERROR {who} needs {q}: neither carried nor on the GPU machine'); ok = False
size = lambda ws: sum(w.stat().st_size for _, w in ws.values()) / 2**20
print(f'{len(carried)} wheels ({size(carried):.1f} MiB) + {len(fb)} fallback wheels ({size(fb):.1f} MiB) in {DEST}/')
sys.exit(0 if ok else 1)
EOF
