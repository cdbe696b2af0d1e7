#!/usr/bin/env bash
# Install the Debian packages the service tests and benchmark use, idempotently, and start the Docker engine:
#   - prometheus (with promtool): tests/test_prometheus.py runs a real Prometheus against the service,
#     tests/test_deploy_files.py checks deploy/*.yml with promtool;
#   - wrk: the load generator of bench/serve_speed.py (not needed by the tests);
#   - docker.io and debootstrap: tests/test_container.py builds the serving image (its base from Debian's packages,
#     tools/build-base-image.sh) and runs it; dockerd is started here when none answers (it needs root);
#   - postgresql: tests/test_distributed.py runs two Optuna workers on one study in a real PostgreSQL server; a cluster
#     is started here when none answers on localhost:5432, with a role and database for the tests (URL printed at the end).
# Usage: bash tools/install-services.sh   (as root, or with sudo; installs only what is missing)
set -uo pipefail
need=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v pg_ctlcluster >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
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
# --- PostgreSQL: a cluster answering on localhost:5432, a role and a database for the tests (idempotent).
PG_PORT=5432 PG_ROLE=trainkit PG_PASSWORD=trainkit PG_DB=trainkit_test
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
if ! pg_isready -q -h localhost -p "$PG_PORT"; then
  read -r pg_ver pg_name _ < <(pg_lsclusters --no-header | awk -v port="$PG_PORT" '$3 == port' | head -1)
  if [ -z "${pg_ver:-}" ]; then  # no cluster on that port yet: create Debian's default one
    pg_ver=$(ls /usr/lib/postgresql | sort -V | tail -1) pg_name=main
    $SUDO pg_createcluster --port "$PG_PORT" "$pg_ver" "$pg_name" >/dev/null \
      || { echo "install-services: FAIL: pg_createcluster $pg_ver $pg_name" >&2; exit 1; }
  fi
  echo "install-services: starting PostgreSQL $pg_ver/$pg_name (pg_ctlcluster; log: /var/log/postgresql/)"
  $SUDO pg_ctlcluster "$pg_ver" "$pg_name" start || { echo "install-services: FAIL: pg_ctlcluster $pg_ver $pg_name start" >&2; exit 1; }
  for _ in $(seq 30); do pg_isready -q -h localhost -p "$PG_PORT" && break; sleep 1; done
  pg_isready -q -h localhost -p "$PG_PORT" || { echo "install-services: FAIL: PostgreSQL does not answer on localhost:$PG_PORT" >&2; exit 1; }
fi
as_pg psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qc "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN CREATE ROLE $PG_ROLE LOGIN PASSWORD '$PG_PASSWORD'; END IF;
END \$\$;" || { echo "install-services: FAIL: creating the role $PG_ROLE" >&2; exit 1; }
as_pg psql -p "$PG_PORT" -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1 \
  || as_pg createdb -p "$PG_PORT" -O "$PG_ROLE" "$PG_DB" || { echo "install-services: FAIL: createdb $PG_DB" >&2; exit 1; }
PG_URL="postgresql+psycopg://$PG_ROLE:$PG_PASSWORD@localhost:$PG_PORT/$PG_DB"
echo "install-services: PostgreSQL $(as_pg psql -p "$PG_PORT" -tAc 'SHOW server_version') ready; connect with"
echo "  export TRAINKIT_TEST_POSTGRES_URL=$PG_URL   (tools/test.sh sets this default)"
# --- end PostgreSQL
echo "install-services: prometheus, promtool, wrk, debootstrap and a Docker engine ($(docker info --format '{{.ServerVersion}}')) ready"
