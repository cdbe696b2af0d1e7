#!/usr/bin/env bash
# Install the Debian packages the service tests and benchmark use, idempotently:
#   - prometheus (with promtool): tests/test_prometheus.py runs a real Prometheus against the service,
#     tests/test_deploy_files.py checks deploy/*.yml with promtool;
#   - wrk: the load generator of bench/serve_speed.py (not needed by the tests).
# Usage: bash tools/install-services.sh   (as root, or with sudo; skipped when both are present)
set -uo pipefail
need=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -eq 0 ]; then
  echo "install-services: prometheus, promtool and wrk present"
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-services: FAIL: ${need[*]} missing and apt-get is not available" >&2; exit 1; }
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "install-services: installing Debian's ${need[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends "${need[@]}" \
  || { $SUDO apt-get update -q && $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends "${need[@]}"; } \
  || { echo "install-services: FAIL: apt-get install ${need[*]}" >&2; exit 1; }
command -v prometheus >/dev/null && command -v promtool >/dev/null || { echo "install-services: FAIL: prometheus not on PATH" >&2; exit 1; }
