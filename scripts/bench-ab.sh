#!/usr/bin/env bash
# Side by side on one machine: the same load against two keyshift binaries, alternating, so a
# change's cost is read as a ratio rather than against yesterday's noise.
#   scripts/bench-ab.sh <baseline keyshift binary> <candidate keyshift binary>
# Environment: OP (wrapkey), CONNECTIONS (16), RUN_SECONDS (4), ROUNDS (3), PIN (unset; 1: the
# server on core 0 and the load generator on core 1, with taskset).
set -euo pipefail
base=$1 cand=$2
# (Not SECONDS: bash keeps its own counter under that name.)
op=${OP:-wrapkey} conns=${CONNECTIONS:-16} secs=${RUN_SECONDS:-4} rounds=${ROUNDS:-3}
server_cpu=() bench_cpu=()
if [ "${PIN:-}" = 1 ]; then server_cpu=(taskset -c 0) bench_cpu=(taskset -c 1); fi
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet -p keyshift-bench --example keyshift-bench --manifest-path "$root/Cargo.toml"
bench=$root/target/release/examples/keyshift-bench
run() { # binary label
  local dir pid
  dir=$(mktemp -d)
  "${server_cpu[@]}" "$1" serve --data-dir "$dir" --listen 127.0.0.1:0 > "$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do [ -f "$dir/admin.json" ] && break; sleep 0.1; done
  sleep 0.5
  echo "$2 $("${bench_cpu[@]}" "$bench" load --admin "$dir/admin.json" --op "$op" --connections "$conns" --seconds "$secs" 2>&1 | tail -1)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir" "$dir.log"
}
for _ in $(seq 1 "$rounds"); do
  run "$base" baseline
  run "$cand" candidate
done
