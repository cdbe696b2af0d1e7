#!/usr/bin/env bash
# Every test, in the order CI needs them: notebooks in sync and clean, every notebook executed,
# then pytest (last, so its summary line closes the log). Run through `make test`.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
fail=0

# Course data and artifacts go to a fresh folder, not the user's.
export TRAINKIT_DATA="${TRAINKIT_DATA:-$(mktemp -d)/data}"
export TRAINKIT_ARTIFACTS="${TRAINKIT_ARTIFACTS:-$(mktemp -d)/artifacts}"
# In CI the browser tests must run, not skip (tools/install-browser.sh installs Chromium and Playwright).
[ "${CI:-}" = true ] && export TRAINKIT_BROWSER_REQUIRED=1
# ...and so must the container test (tools/install-services.sh installs Docker and starts its engine).
[ "${CI:-}" = true ] && export TRAINKIT_CONTAINER_REQUIRED=1
# ...and so must the shared-study test on PostgreSQL (tools/install-services.sh installs and starts the server).
export TRAINKIT_TEST_POSTGRES_URL="${TRAINKIT_TEST_POSTGRES_URL:-postgresql+psycopg://trainkit:trainkit@localhost:5432/trainkit_test}"
[ "${CI:-}" = true ] && export TRAINKIT_POSTGRES_REQUIRED=1

echo "== 1/3 nbdev-export and nbdev-clean leave no diff"
state() { git status --porcelain --untracked-files=all -- nbs trainkit; git diff -- nbs trainkit | sha1sum; }
before=$(state)
$BIN/nbdev-export && $BIN/nbdev-clean || fail=1
after=$(state)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev-export or nbdev-clean changed files. Edit the notebooks, run nbdev-export and nbdev-clean, commit both:"
  diff <(echo "$before") <(echo "$after")
  fail=1
fi

echo "== 2/3 nbdev-test: every notebook executes (fast mode)"
start=$(date +%s)
$BIN/nbdev-test --timing || fail=1
echo "nbdev-test took $(( $(date +%s) - start )) s"

echo "== 3/3 pytest tests/"
$BIN/python -m pytest tests -q -p no:cacheprovider
rc=$?
[ $rc -eq 0 ] || fail=1
exit $fail
