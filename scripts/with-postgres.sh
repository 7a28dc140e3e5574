#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on 127.0.0.1, runs a command with
# ATTNREC_TEST_POSTGRES_URL pointing at it, then stops the server and deletes its files.
# The command's exit status is the script's.
#
# Usage: scripts/with-postgres.sh COMMAND [ARGUMENT]...
# Needs the PostgreSQL server binaries (Debian: apt-get install postgresql). As root, the
# server runs as the `postgres` system user, because initdb rejects root.
# Environment: PG_BIN (default: the newest /usr/lib/postgresql/*/bin, else initdb on PATH)
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 COMMAND [ARGUMENT]..." >&2
  exit 2
fi

pg_bin=${PG_BIN:-}
if [[ -z $pg_bin ]]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [[ -z $pg_bin ]] && command -v initdb >/dev/null; then
  pg_bin=$(dirname "$(command -v initdb)")
fi
if [[ -z $pg_bin || ! -x $pg_bin/initdb || ! -x $pg_bin/pg_ctl ]]; then
  echo "PostgreSQL server binaries (initdb, pg_ctl) not found; install them (Debian: apt-get install postgresql) or set PG_BIN" >&2
  exit 1
fi

work_dir=$(mktemp -d)
chmod 755 "$work_dir"
as_server_user=()
if [[ $(id -u) -eq 0 ]]; then
  chown postgres: "$work_dir"
  as_server_user=(runuser -u postgres --)
fi

stop_server() {
  "${as_server_user[@]}" "$pg_bin/pg_ctl" -D "$work_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work_dir"
}
trap stop_server EXIT

# A port that was free a moment ago; the server fails to start if another process takes it first.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"${as_server_user[@]}" "$pg_bin/initdb" --pgdata="$work_dir/data" --username=postgres --auth=trust --encoding=UTF8 --no-sync >"$work_dir/initdb.log" 2>&1 \
  || { cat "$work_dir/initdb.log" >&2; exit 1; }
# fsync is off because the server and its data are deleted when the command ends.
"${as_server_user[@]}" "$pg_bin/pg_ctl" -D "$work_dir/data" -l "$work_dir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$work_dir -c fsync=off -c max_connections=200" start >/dev/null \
  || { cat "$work_dir/server.log" >&2; exit 1; }

export ATTNREC_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "PostgreSQL for tests at $ATTNREC_TEST_POSTGRES_URL" >&2
set +e
"$@"
status=$?
set -e
exit "$status"
