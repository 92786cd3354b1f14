#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the conformance tests, from Debian's
# packages (installed when missing). Prints `export DSE_TEST_POSTGRES_URL=...` on stdout;
# the password comes from DSE_TEST_POSTGRES_PASSWORD (random when unset), never a flag.
# Usage: eval "$(.ci/postgres.sh [DATA_DIR] [PORT])"
set -euo pipefail
data_dir=${1:-/tmp/dse-ci-postgres}
port=${2:-55432}
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  { $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y postgresql; } >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
run_as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
password=${DSE_TEST_POSTGRES_PASSWORD:-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}
# Always a new cluster: a data directory left by an earlier run (same machine, /tmp kept) has
# another password, so stop whatever runs on it and start over.
if [ -f "$data_dir/PG_VERSION" ]; then
  run_as_postgres "$bin/pg_ctl" -D "$data_dir" -m immediate stop >/dev/null 2>&1 || true
fi
rm -rf "$data_dir"
if [ ! -f "$data_dir/PG_VERSION" ]; then
  mkdir -p "$data_dir"
  [ "$(id -u)" = 0 ] && chown postgres "$data_dir"
  pwfile=$(mktemp)
  echo "$password" >"$pwfile"
  [ "$(id -u)" = 0 ] && chown postgres "$pwfile"
  run_as_postgres "$bin/initdb" -D "$data_dir" -A scram-sha-256 -U postgres --pwfile="$pwfile" >&2
  rm -f "$pwfile"
fi
if ! run_as_postgres "$bin/pg_ctl" -D "$data_dir" status >/dev/null 2>&1; then
  run_as_postgres "$bin/pg_ctl" -D "$data_dir" -l "$data_dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data_dir -c max_connections=200 -c fsync=off" start >&2
fi
export PGPASSWORD=$password
psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='dse'" | grep -q 1 \
  || echo "CREATE ROLE dse LOGIN CREATEDB PASSWORD '$password'" | psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -q >&2
psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='dse_test'" | grep -q 1 \
  || psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE dse_test OWNER dse" >&2
echo "export DSE_TEST_POSTGRES_URL=postgresql://dse:$password@127.0.0.1:$port/dse_test"
echo "export DSE_TEST_POSTGRES_STOP='$bin/pg_ctl -D $data_dir -m fast stop'"
