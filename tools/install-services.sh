#!/usr/bin/env bash
# Install the Debian packages the service tests and benchmark use, idempotently, and start the Docker engine:
#   - prometheus (with promtool): tests/test_prometheus.py runs a real Prometheus against the service,
#     tests/test_deploy_files.py checks deploy/*.yml with promtool;
#   - wrk: the load generator of bench/serve_speed.py (not needed by the tests);
#   - docker.io and debootstrap: tests/test_container.py builds the serving image (its base from Debian's packages,
#     tools/build-base-image.sh) and runs it; dockerd is started here when none answers (it needs root).
# Usage: bash tools/install-services.sh   (as root, or with sudo; installs only what is missing)
set -uo pipefail
need=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "install-services: FAIL: ${need[*]} missing and apt-get is not available" >&2; exit 1; }
  echo "install-services: installing Debian's ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends "${need[@]}" \
    || { $SUDO apt-get update -q && $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends "${need[@]}"; } \
    || { echo "install-services: FAIL: apt-get install ${need[*]}" >&2; exit 1; }
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null || { echo "install-services: FAIL: prometheus not on PATH" >&2; exit 1; }
# The Docker engine: started in the background if none answers; it outlives this script (the tests need it).
if ! docker info >/dev/null 2>&1; then
  echo "install-services: starting dockerd (log: /tmp/dockerd.log)"
  ($SUDO setsid dockerd >/tmp/dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "install-services: FAIL: dockerd did not start:" >&2; tail -5 /tmp/dockerd.log >&2; exit 1; }
fi
echo "install-services: prometheus, promtool, wrk, debootstrap and a Docker engine ($(docker info --format '{{.ServerVersion}}')) ready"
