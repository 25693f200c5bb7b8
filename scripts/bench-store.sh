#!/usr/bin/env bash
# Key creation and wrapkey by store, side by side on one machine: SQLite (the embedded default),
# PostgreSQL with one `keyshift serve`, and PostgreSQL with two nodes sharing the database (the
# load split evenly between them, their rates summed). Each round runs the three in turn, so the
# figures are read as ratios to SQLite rather than against another day's noise.
#   scripts/bench-store.sh
# Environment: OPS ("create wrapkey"), CONNECTIONS (16, in total), RUN_SECONDS (5), ROUNDS (3),
# KEYSHIFT (a keyshift binary to measure instead of building this checkout's).
# Starts its own PostgreSQL with scripts/postgres-test-server.sh (fsync on, synchronous_commit on).
set -euo pipefail
ops=${OPS:-create wrapkey} conns=${CONNECTIONS:-16} secs=${RUN_SECONDS:-5} rounds=${ROUNDS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${KEYSHIFT:-}" ]]; then
  cargo build --release --quiet -p keyshift-cli --manifest-path "$root/Cargo.toml"
fi
cargo build --release --quiet -p keyshift-bench --example keyshift-bench --manifest-path "$root/Cargo.toml"
keyshift=${KEYSHIFT:-$root/target/release/keyshift}
bench=$root/target/release/examples/keyshift-bench
work=$(mktemp -d)
pg=$(mktemp -d)  # its own: the cluster owner must reach it
cleanup() { "$root/scripts/postgres-test-server.sh" stop "$pg" > /dev/null 2>&1 || true; rm -rf "$work" "$pg"; }
trap cleanup EXIT
url=$("$root/scripts/postgres-test-server.sh" start "$pg" 2> /dev/null)
url=${url#KEYSHIFT_TEST_POSTGRES_URL=}
# postgres://user:password@host:port/db -> the URL without its password, and the password.
password=${url#*://*:}; password=${password%%@*}
store_url=${url/:$password@/@}
(umask 077; printf '%s\n' "$password" > "$work/pgpass")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # dir port [serve flags...] -> pid on stdout; waits for the first node's admin.json
  local dir=$1 port=$2
  shift 2
  "$keyshift" serve --data-dir "$dir" --listen "127.0.0.1:$port" "$@" > "$dir.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do [ -f "$admin" ] && break; sleep 0.1; done
  "$bench" wait --admin "$admin" > /dev/null
  echo "$pid"
}
rate() { sed -n 's/.* ops_per_sec=\([0-9]*\).*/\1/p'; }
errs() { sed -n 's/.* errors=\([0-9]*\).*/\1/p'; }
load() { # admin op connections [vault url]
  "$bench" load --admin "$1" --op "$2" --connections "$3" --seconds "$secs" ${4:+--url "$4"} 2>&1 | tail -1
}
n=0
for _ in $(seq 1 "$rounds"); do
  for op in $ops; do
    n=$((n + 1))
    # SQLite
    d=$work/sqlite-$n; admin=$d/admin.json; p=$(start "$d" "$(free_port)")
    echo "$op sqlite $(load "$admin" "$op" "$conns")"
    kill "$p"; wait "$p" 2> /dev/null || true
    # PostgreSQL, one node: a schema of its own per run.
    schema=bench_$n
    "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/psql" -q "$url" -c "CREATE SCHEMA $schema" > /dev/null
    su="$store_url?options[search_path]=$schema"
    pgflags=(--store-url "$su" --store-password-file "$work/pgpass")
    d=$work/pg1-$n; admin=$d/admin.json; port1=$(free_port)
    p=$(start "$d" "$port1" "${pgflags[@]}")
    echo "$op postgres-1-node $(load "$admin" "$op" "$conns")"
    kill "$p"; wait "$p" 2> /dev/null || true
    # PostgreSQL, two nodes on that schema. The second node's data directory has the first's
    # root key and CA; both accept the first's admin credentials (one deployment). Half the
    # connections each.
    d2=$work/pg2b-$n; port2=$(free_port)
    p1=$(start "$d" "$port1" "${pgflags[@]}")
    mkdir -p "$d2"; cp -a "$d/root.key" "$d/tls" "$d2/"
    # Nodes of one deployment share its public URL (in production, the load balancer's name):
    # it names the token issuer, so tokens from either node are good on both.
    p2=$(start "$d2" "$port2" "${pgflags[@]}" --public-url "https://localhost:$port1")
    # `start` waited for the first node; wait for the second one's own listener too.
    for _ in $(seq 1 200); do
      curl -sf --cacert "$d/tls/ca.pem" "https://localhost:$port2/health" > /dev/null && break
      sleep 0.1
    done
    half=$((conns / 2))
    # The keys the operation uses are made first, by one node: two loads setting up at once would
    # race to create the same key.
    "$bench" load --admin "$admin" --op "$op" --connections 1 --seconds 0.5 --warmup 0.1 > /dev/null 2>&1 || true
    load "$admin" "$op" "$half" > "$work/a" &
    la=$!
    load "$admin" "$op" "$half" "https://localhost:$port2" > "$work/b" || true
    wait "$la" || true
    a=$(rate < "$work/a"); b=$(rate < "$work/b")
    echo "$op postgres-2-nodes ops_per_sec=$((a + b)) (node1 $a, node2 $b) errors=$(errs < "$work/a")+$(errs < "$work/b")"
    [[ -n $a && -n $b ]] || { echo "two-node load failed: $(cat "$work/a") / $(cat "$work/b")"; tail -5 "$d2.log"; }
    kill "$p1" "$p2"; wait "$p1" "$p2" 2> /dev/null || true
  done
done
