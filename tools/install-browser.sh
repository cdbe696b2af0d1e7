#!/usr/bin/env bash
# Install what the browser tests (tests/test_browser.py, marker `browser`) need, idempotently:
#   - Debian's Chromium at /usr/bin/chromium (apt, as root; skipped when it is already there);
#   - the Playwright Python package in .venv (it bundles its node driver). Playwright's own
#     browser download (`playwright install`) is never run: it needs the network; the tests
#     drive Debian's Chromium through executable_path instead.
# Usage: bash tools/install-browser.sh   (run from anywhere; .venv must exist: `make setup`)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CHROMIUM=/usr/bin/chromium

die() { echo "install-browser: FAIL: $*" >&2; exit 1; }

if [ -x "$CHROMIUM" ]; then
  echo "install-browser: $CHROMIUM present, skipping apt"
else
  command -v apt-get >/dev/null || die "$CHROMIUM is missing and apt-get is not available; install Chromium by hand."
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else die "$CHROMIUM is missing; run as root (or with sudo) to apt-get install chromium."; fi
  else
    SUDO=
  fi
  echo "install-browser: installing Debian's chromium (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q || die "apt-get update failed."
  $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends chromium || die "apt-get install chromium failed."
  [ -x "$CHROMIUM" ] || die "apt-get installed chromium but $CHROMIUM is not there."
fi

[ -x "$BIN/python" ] || die "$BIN/python not found; create the venv first (make setup)."
if "$BIN/python" -c "import playwright.sync_api" 2>/dev/null; then
  echo "install-browser: playwright already in $BIN"
else
  echo "install-browser: pip install playwright"
  "$BIN/python" -m pip install -q playwright || die "pip install playwright failed."
  "$BIN/python" -c "import playwright.sync_api" || die "playwright installed but does not import."
fi

# A quick sanity check that the browser starts at all (no network: it only prints its version).
"$CHROMIUM" --version >/dev/null 2>&1 || die "$CHROMIUM --version failed."
echo "install-browser: ok ($("$CHROMIUM" --version 2>/dev/null | head -1); playwright $("$BIN/python" -c 'from importlib.metadata import version; print(version("playwright"))'))"
