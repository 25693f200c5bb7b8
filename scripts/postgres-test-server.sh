#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the PostgreSQL migration source.
#
#   scripts/postgres-test-server.sh start DIR   # prints KEYSHIFT_TEST_POSTGRES_URL=postgres://...
#   scripts/postgres-test-server.sh stop DIR
#
# `start` makes a cluster in DIR/data (initdb, as the `postgres` user when run as root: the
# server refuses to run as root), starts it on a free port of 127.0.0.1 with fsync on, creates a
# database and a password-authenticated (SCRAM) role for the tests, and prints one line, so that
#   pg_env=$(scripts/postgres-test-server.sh start "$dir") && export "$pg_env"
# sets the variable the Rust tests read. Everything else goes to standard error. The server's
# socket and log stay in DIR; `stop` stops it (DIR is the caller's to remove).
# PGBIN names the directory of initdb/pg_ctl [default: the newest /usr/lib/postgresql/*/bin].
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# == 2 ]] || usage
cmd=$1
dir=$(realpath -m "$2")
cd /  # the owner may not be able to read the caller's directory

if [[ -z "${PGBIN:-}" ]]; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -1 || true)
fi
if [[ -z "$PGBIN" || ! -x "$PGBIN/initdb" ]]; then
  echo "no PostgreSQL server binaries (set PGBIN, or install Debian's postgresql)" >&2
  exit 1
fi

# Runs a command as the cluster's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [[ $(id -u) == 0 ]]; then
      chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    if [[ -e "$dir/data/PG_VERSION" ]]; then
      echo "$dir/data already holds a cluster: stop it and use a new directory" >&2
      exit 1
    fi
    as_owner "$PGBIN/initdb" -D "$dir/data" --auth-local=peer --auth-host=scram-sha-256 \
      --encoding=UTF8 --no-locale > "$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=on -c max_connections=200" \
      start > /dev/null || { cat "$dir/server.log" >&2; exit 1; }
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    # Through the socket in DIR as the cluster's owner (peer authentication), once.
    as_owner "$PGBIN/psql" -h "$dir" -p "$port" -d postgres -v ON_ERROR_STOP=1 -q > /dev/null <<SQL
CREATE ROLE keyshift_test LOGIN PASSWORD '$password';
CREATE DATABASE keyshift_test OWNER keyshift_test;
SQL
    echo "PostgreSQL test server on 127.0.0.1:$port (cluster $dir/data)" >&2
    echo "KEYSHIFT_TEST_POSTGRES_URL=postgres://keyshift_test:$password@127.0.0.1:$port/keyshift_test"
    ;;
  stop)
    if [[ -e "$dir/data/postmaster.pid" ]]; then
      as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop > /dev/null
    fi
    ;;
  *)
    usage
    ;;
esac
