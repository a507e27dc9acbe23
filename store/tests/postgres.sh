#!/usr/bin/env bash
# Runs a command with a private PostgreSQL cluster: installs Debian's
# postgresql if it is missing, starts a throw-away cluster on a loopback port
# (as the postgres user when run as root), creates a database, runs the
# command with CALLGUARD_TEST_POSTGRES_URL (and CALLGUARD_TEST_POSTGRES_BIN,
# the binaries) set, and stops the cluster after.
#
#   store/tests/postgres.sh cargo test -p callguard-store -p callguard-agent
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
port=${CALLGUARD_TEST_POSTGRES_PORT:-54329}
dir=$(mktemp -d /tmp/callguard-pg.XXXXXX)

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi

as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
stop() {
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  rm -rf "$dir"
}
trap stop EXIT
as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres callguard_test

export CALLGUARD_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/callguard_test"
# Tests that restart a server or change its settings make clusters of their
# own from the same binaries (callguard_testkit::PostgresCluster).
export CALLGUARD_TEST_POSTGRES_BIN="$bin"
echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $CALLGUARD_TEST_POSTGRES_URL"
"$@"
