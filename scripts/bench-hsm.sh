#!/usr/bin/env bash
# HSM-backed key operations beside software keys, on one machine, side by side: the same load
# against `keyshift serve` without an HSM (the -HSM keys are then software keys) and with a fresh
# SoftHSM2 token attached (the keys are generated in and used through the token's session pool),
# alternating, so the cost of the token reads as a ratio.
#   scripts/bench-hsm.sh
# Environment: OPS ("wrapkey sign"), CONNECTIONS (16), RUN_SECONDS (5), ROUNDS (3),
#   KEYSHIFT_PKCS11_MODULE (/usr/lib/softhsm/libsofthsm2.so), PKCS11_MAX_SESSIONS (8).
set -euo pipefail
ops=${OPS:-wrapkey sign} conns=${CONNECTIONS:-16} secs=${RUN_SECONDS:-5} rounds=${ROUNDS:-3}
module=${KEYSHIFT_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet -p keyshift-cli --manifest-path "$root/Cargo.toml"
cargo build --release --quiet -p keyshift-bench --example keyshift-bench --manifest-path "$root/Cargo.toml"
keyshift=$root/target/release/keyshift
bench=$root/target/release/examples/keyshift-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" > "$work/softhsm2.conf"
mkdir "$work/tokens"
export SOFTHSM2_CONF=$work/softhsm2.conf
softhsm2-util --init-token --free --label bench --so-pin 87654321 --pin 1234 > /dev/null
(umask 077; echo 1234 > "$work/pin")

run() { # label op [serve flags...]
  local label=$1 op=$2 dir pid
  shift 2
  dir=$(mktemp -d -p "$work")
  "$keyshift" serve --data-dir "$dir" --listen 127.0.0.1:0 "$@" > "$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do [ -f "$dir/admin.json" ] && break; sleep 0.1; done
  "$bench" wait --admin "$dir/admin.json" > /dev/null
  echo "$op $label $("$bench" load --admin "$dir/admin.json" --op "$op" --connections "$conns" \
    --seconds "$secs" --server-pid "$pid" 2>&1 | tail -1)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for _ in $(seq 1 "$rounds"); do
  for op in $ops; do
    run software "$op"
    run softhsm2 "$op" --pkcs11-module "$module" --pkcs11-token-label bench \
      --pkcs11-pin-file "$work/pin" --pkcs11-max-sessions "${PKCS11_MAX_SESSIONS:-8}"
  done
done
