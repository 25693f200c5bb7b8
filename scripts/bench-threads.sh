#!/usr/bin/env bash
# CPU time and context switches per request, by thread, for one load against one keyshift
# binary: each thread's utime, stime and voluntary/involuntary switches from /proc, read before
# and after the measured run (after a 1 s warm-up), divided by the requests answered.
#   scripts/bench-threads.sh <keyshift binary> [label]
# Environment: OP (wrapkey), CONNECTIONS (16), RUN_SECONDS (4). Linux only.
set -euo pipefail
bin=$1 label=${2:-$1}
op=${OP:-wrapkey} conns=${CONNECTIONS:-16} secs=${RUN_SECONDS:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet -p keyshift-bench --example keyshift-bench --manifest-path "$root/Cargo.toml"
bench=$root/target/release/examples/keyshift-bench
dir=$(mktemp -d)
"$bin" serve --data-dir "$dir" --listen 127.0.0.1:0 > "$dir.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2> /dev/null || true; wait "$pid" 2> /dev/null || true; rm -rf "$dir" "$dir.log"' EXIT
for _ in $(seq 1 100); do [ -f "$dir/admin.json" ] && break; sleep 0.1; done
sleep 0.5
snap() { # one line per thread: tid name utime stime voluntary involuntary
  for t in /proc/"$pid"/task/*; do
    local st
    read -r -a st < <(sed 's/.*) //' "$t/stat")
    echo "${t##*/} $(tr ' ' '_' < "$t/comm") ${st[11]} ${st[12]}" \
      "$(awk '/^voluntary_ctxt/{print $2}' "$t/status")" \
      "$(awk '/^nonvoluntary_ctxt/{print $2}' "$t/status")"
  done
}
"$bench" load --admin "$dir/admin.json" --op "$op" --connections "$conns" --seconds 1 > /dev/null 2>&1
snap > "$dir.before"
out=$("$bench" load --admin "$dir/admin.json" --op "$op" --connections "$conns" --seconds "$secs" 2>&1 | tail -1)
snap > "$dir.after"
python3 - "$label" "$out" "$secs" "$(getconf CLK_TCK)" "$dir.before" "$dir.after" <<'PY'
import collections, re, sys
label, out, secs, tick, before, after = sys.argv[1:]
ops = float(re.search(r"ops_per_sec=([0-9.]+)", out).group(1))
requests = ops * float(secs)
tick = float(tick)
def load(path):
    rows = {}
    for line in open(path):
        tid, name, *nums = line.split()
        rows[tid] = (name, *map(int, nums))
    return rows
a, b = load(before), load(after)
by_name = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
for tid, (name, *now) in b.items():
    was = a.get(tid, (name, 0, 0, 0, 0))[1:]
    row = by_name[name]
    for i in range(4):
        row[i] += now[i] - was[i]
    row[4] += 1
print(f"{label}: {out}")
total = [0, 0, 0, 0]
for name, (u, s, v, n, count) in sorted(by_name.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
    total = [total[0] + u, total[1] + s, total[2] + v, total[3] + n]
    if u + s + v + n == 0:
        continue
    print(f"  {name:20s} x{count:<3d} user {1e6 * u / tick / requests:6.1f} us  system {1e6 * s / tick / requests:6.1f} us"
          f"  voluntary {v / requests:.3f}  involuntary {n / requests:.3f}  (per request)")
u, s, v, n = total
print(f"  {'all threads':25s} user {1e6 * u / tick / requests:6.1f} us  system {1e6 * s / tick / requests:6.1f} us"
      f"  voluntary {v / requests:.3f}  involuntary {n / requests:.3f}  (per request)")
PY
