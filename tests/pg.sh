#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests on 127.0.0.1:55432, from Debian's
# `postgresql` package (installed if missing). Idempotent: does nothing when it already runs.
# Trust authentication on loopback only, so no password exists to leak; fsync off because
# the data is thrown away. The tests find it at TEST_IMGNODE_PG (default below).
#   bash tests/pg.sh         start (initialising the cluster on first use)
#   bash tests/pg.sh stop    stop it
# Each start drops the databases earlier test runs left.
set -euo pipefail

port="${TEST_IMGNODE_PG_PORT:-55432}"
dir="${TEST_IMGNODE_PG_DIR:-/var/tmp/imgnode-test-pg}"

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    postgresql >/dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

# The server refuses to run as root: it runs as the package's `postgres` user (or as the
# caller when that is not root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

if [ "${1:-}" = "stop" ]; then
  as_pg "$bin/pg_ctl -D $dir stop -m fast" || true
  exit 0
fi

# Databases the tests made (one per test store); dropped at each start so runs do not pile up.
drop_test_databases() {
  "$bin/psql" -h 127.0.0.1 -p "$port" -U imgnode -d postgres -qAt -c \
    "SELECT datname FROM pg_database WHERE datname LIKE 'imgnode\_t\_%'" |
    while read -r db; do
      "$bin/psql" -h 127.0.0.1 -p "$port" -U imgnode -d postgres -q \
        -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    done
}

if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  drop_test_databases
  echo "PostgreSQL already running on 127.0.0.1:$port"
  exit 0
fi

if [ ! -f "$dir/PG_VERSION" ]; then
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; fi
  as_pg "$bin/initdb -D $dir -U imgnode --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null"
fi
as_pg "$bin/pg_ctl -D $dir -l $dir/server.log -w start -o \"-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500\"" >/dev/null
"$bin/pg_isready" -q -h 127.0.0.1 -p "$port"
echo "PostgreSQL running on 127.0.0.1:$port (TEST_IMGNODE_PG=postgres://imgnode@127.0.0.1:$port/postgres)"
