#!/usr/bin/env bash
# Keyshift's benchmark, as published in docs/benchmarks.md.
#
# Builds release binaries, starts `keyshift serve` on a fresh data directory on 127.0.0.1 (a free
# port picked by the kernel), waits for GET /health, measures each operation against the server
# beside the raw in-process rate of its primitive, and prints a markdown table. A shared or virtual machine's speed drifts within seconds, so the load runs
# and the raw runs alternate (raw, load, raw, load, ..., raw): each load run is compared with the
# raw runs either side of it, and the table gives medians over the rounds.
#
#   scripts/bench.sh                              # 5 rounds of 5 s runs per op (about 5 minutes)
#   SECONDS=10 ROUNDS=3 scripts/bench.sh          # longer runs, fewer rounds
#   CONNECTIONS=64 OPS="wrapkey encrypt" scripts/bench.sh
#
# Environment:
#   SECONDS       measured seconds of each load run and each raw run (default 5)
#   ROUNDS        load runs per op, each between two raw runs (default 5)
#   CONNECTIONS   connections for every op (default per op: see default_connections)
#   OPS           ops to run, of: wrapkey encrypt decrypt create (default: all four)
#   WARMUP        unmeasured seconds before each load run (default 1)
#   PORT          port to listen on (default 0: any free port)
#   KEEP_DATA     1 keeps the data directory and server log (its path is printed)

# bash counts SECONDS up from the value it was given: read it before anything else takes time.
seconds_from_env=$SECONDS
set -euo pipefail
export LC_ALL=C # decimal points for sort and awk, whatever the caller's locale

if [[ $seconds_from_env -gt 0 ]]; then measure=$seconds_from_env; else measure=5; fi
rounds=${ROUNDS:-5}
ops=${OPS:-wrapkey encrypt decrypt create}
for op in $ops; do
  case $op in
    wrapkey|encrypt|decrypt|create) ;;
    *) echo "unknown op '$op' in OPS: use wrapkey, encrypt, decrypt, create" >&2; exit 2 ;;
  esac
done
warmup=${WARMUP:-1}
port=${PORT:-0}

# Connections per op, from sweeps of 1..64 on the 2-core machine of docs/benchmarks.md: the
# AES paths and decrypt keep the server busy from 8-16 on and only queue more beyond; create
# runs at the same rate from 1 connection on (commits are serialised) while its p99 grows
# with every waiting writer.
default_connections() {
  case $1 in
    wrapkey|encrypt) echo 16 ;;
    decrypt) echo 8 ;;
    create) echo 4 ;;
  esac
}
# Generator threads per op: the AES paths need about 0.8 of a core of generator; at a few
# thousand requests per second one thread is plenty, and a second only adds wake-ups that
# take CPU from the server.
client_threads() {
  case $1 in
    wrapkey|encrypt) nproc ;;
    *) echo 1 ;;
  esac
}
# The in-process primitive each op is compared with.
raw_op() {
  case $1 in
    create) echo create-ec ;;
    *) echo "$1" ;;
  esac
}

cd "$(dirname "$0")/.."
echo "building release binaries..." >&2
cargo build --release --quiet -p keyshift-cli && cargo build --release --quiet -p keyshift-bench --example keyshift-bench
bench=target/release/examples/keyshift-bench
keyshift=target/release/keyshift

work=$(mktemp -d "${TMPDIR:-/tmp}/keyshift-bench.XXXXXX")
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then
    if kill -0 "$server_pid" 2>/dev/null; then
      kill "$server_pid" 2>/dev/null || true
      wait "$server_pid" 2>/dev/null || true
    else
      # Gone before we stopped it: say how, with the end of its log.
      status=0; wait "$server_pid" 2>/dev/null || status=$?
      echo "the server (pid $server_pid) ended on its own, exit status $status" \
        "$( ((status > 128)) && echo "(signal $((status - 128)))")" >&2
      tail -20 "$work/server.log" >&2 || true
    fi
  fi
  if [[ ${KEEP_DATA:-0} == 1 ]]; then
    echo "data directory and server log kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

"$keyshift" serve --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server_pid=$!
admin=$work/data/admin.json
for _ in $(seq 1 300); do
  [[ -s $admin ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the server exited:" >&2; cat "$work/server.log" >&2; exit 1
  fi
  sleep 0.2
done
[[ -s $admin ]] || { echo "no $admin after 60 s" >&2; cat "$work/server.log" >&2; exit 1; }
"$bench" wait --admin "$admin" --timeout 30
echo "server pid $server_pid: $(grep -m1 'serving' "$work/server.log")" >&2

# The value of key=value in a report line; "-" when absent (no /proc: no CPU figures).
field() {
  local v
  v=$(sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2")
  echo "${v:--}"
}
# The median of the numbers on stdin, one a line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rows=()
for op in $ops; do
  conns=${CONNECTIONS:-$(default_connections "$op")}
  raw=$(raw_op "$op")
  echo "== $op: $rounds rounds of raw $raw then load with $conns connections, then raw again" >&2
  : >"$work/$op.rounds"
  previous=$("$bench" raw --op "$raw" --seconds "$measure"); echo "$previous" >&2
  for round in $(seq 1 "$rounds"); do
    load=$("$bench" load --admin "$admin" --op "$op" --connections "$conns" \
      --client-threads "$(client_threads "$op")" --seconds "$measure" --warmup "$warmup" \
      --server-pid "$server_pid"); echo "$load" >&2
    next=$("$bench" raw --op "$raw" --seconds "$measure"); echo "$next" >&2
    # One line per round: the load run and the raw runs either side of it.
    echo "$(field ops_per_sec "$load") $(field p50_ms "$load") $(field p99_ms "$load") $(field errors "$load")" \
      "$(field ops_per_sec "$previous") $(field ops_per_sec "$next")" \
      "$(field cpu_server "$load") $(field cpu_bench "$load") $(field cpu_other "$load")" >>"$work/$op.rounds"
    previous=$next
  done
  col() { awk -v c="$1" '{ print $c }' "$work/$op.rounds" | median; }
  ratios=$(awk '{ print $1 / (($5 + $6) / 2) }' "$work/$op.rounds" | sort -g)
  rows+=("$op $conns $(col 1) $(col 2) $(col 3) $(awk '{ e += $4 } END { print e }' "$work/$op.rounds") \
$(awk '{ print ($5 + $6) / 2 }' "$work/$op.rounds" | median) $(median <<<"$ratios") $(head -1 <<<"$ratios") $(tail -1 <<<"$ratios") \
$(col 7) $(col 8) $(col 9)")
done
echo "== raw create-rsa (generate_rsa 2048), for reference" >&2
rsa_gen=$("$bench" raw --op create-rsa --seconds "$measure"); echo "$rsa_gen" >&2

echo
echo "| op | connections | server ops/s | p50 ms | p99 ms | errors | raw ops/s | ratio (min-max) | CPU cores: server / generator / other | target |"
echo "|---|---:|---:|---:|---:|---:|---:|---|---|---|"
for row in "${rows[@]}"; do
  read -r op conns rate p50 p99 errors raw ratio rmin rmax cs cb co <<<"$row"
  awk -v op="$op" -v c="$conns" -v r="$rate" -v p50="$p50" -v p99="$p99" -v e="$errors" -v raw="$raw" \
      -v ratio="$ratio" -v rmin="$rmin" -v rmax="$rmax" -v cs="$cs" -v cb="$cb" -v co="$co" '
    BEGIN {
      if (op == "decrypt") target = sprintf("ratio >= 0.80: %s", (ratio >= 0.80 && e == 0) ? "met" : "NOT met")
      else if (op == "create") target = sprintf("durable (fsync per commit): %s", e == 0 ? "no errors" : "ERRORS")
      else target = sprintf(">= 20000 ops/s: %s", (r >= 20000 && e == 0) ? "met" : "NOT met")
      printf "| %s | %s | %.0f | %.2f | %.2f | %d | %.0f | %.2f (%.2f-%.2f) | %.2f / %.2f / %.2f | %s |\n",
        op, c, r, p50, p99, e, raw, ratio, rmin, rmax, cs, cb, co, target
    }'
done
echo
echo "Medians of $rounds rounds of $measure s (after a $warmup s warm-up each); errors are summed over all rounds."
echo "Each round's ratio is its server rate over the mean of the raw runs just before and just after it."
echo "raw ops/s: keyshift-crypto in-process on $(nproc) threads (create: generate_ec P-256);" \
  "raw create-rsa (generate_rsa 2048): $(field ops_per_sec "$rsa_gen") ops/s."
echo "$(nproc) cores: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)."
