#!/usr/bin/env bash
# Migration campaign benchmark (issue 5, point 12), engine and server together on this machine:
#  1. a JSON-lines list of ITEMS data keys wrapped (A256KW) under an oct-HSM source key, moved by
#     `keyshift migrate apply` through the server-side batch rewrap (every item also checked under
#     the target), beside the naive path (one unwrapkey and one wrapkey request per item);
#  2. a tree re-encrypted in full (`mode = "reencrypt"`, 3-level output) beside `openssl speed`'s
#     single-core AES-256-GCM encrypt and decrypt rates, and beside the storage alone (the same
#     bytes written and synced, no encryption), which bounds it from below.
# Wall time and peak resident memory (VmHWM) of the engine and of the server are printed.
#   scripts/bench-migrate.sh             (ITEMS=1000000, NAIVE=20000, REENC_MIB=1024)
#   TMPDIR=/dev/shm scripts/bench-migrate.sh   (everything on tmpfs: the storage drops out)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
items=${ITEMS:-1000000} naive=${NAIVE:-20000} reenc=${REENC_MIB:-1024}
cargo build --release --quiet -p keyshift-cli --manifest-path "$root/Cargo.toml"
cargo build --release --quiet -p keyshift-bench --example keyshift-bench --manifest-path "$root/Cargo.toml"
ks=${KEYSHIFT_BIN:-$root/target/release/keyshift}  # KEYSHIFT_BIN: another build, side by side
bench=$root/target/release/examples/keyshift-bench
work=$(mktemp -d "${TMPDIR:-/tmp}/ks-migbench.XXXXXX")
pid=
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$ks" serve --data-dir "$work/d" --listen 127.0.0.1:0 > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [[ -s "$work/d/admin.json" ]] && break; sleep 0.1; done
admin=$work/d/admin.json
"$bench" wait --admin "$admin"
ca=$(jq -r .ca_cert "$admin") url=$(jq -r .vault_url "$admin")
token=$(curl -s --cacert "$ca" "$(jq -r .token_url "$admin")" -d grant_type=client_credentials \
  -d client_id="$(jq -r .client_id "$admin")" --data-urlencode client_secret="$(jq -r .client_secret "$admin")" \
  -d scope=https://vault.azure.net/.default | jq -r .access_token)
call() { curl -sf --cacert "$ca" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
export KEYSHIFT_CREDENTIALS=$admin
hwm() { awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$1/status"; }

# The source key: an oct-HSM key whose value we know, so the list can be made locally.
k_hex=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
k_b64=$(echo "$k_hex" | xxd -r -p | base64 -w0 | tr '+/' '-_' | tr -d '=')
source=$(call -X PUT "$url/keys/bench-src?api-version=2025-07-01" \
  -d "{\"key\":{\"kty\":\"oct-HSM\",\"k\":\"$k_b64\",\"key_ops\":[\"wrapKey\",\"unwrapKey\"]}}" | jq -r .key.kid)
naive_target=$(call -X POST "$url/keys/bench-naive/create?api-version=2025-07-01" -d '{"kty":"oct-HSM"}' | jq -r .key.kid)
s=$(date +%s.%N)
"$bench" gen-wrapped-keys --k-hex "$k_hex" --kid "$source" --count "$items" --out "$work/keys.jsonl"
printf 'made %d wrapped keys (%s MiB) in %.1f s\n' "$items" "$(($(stat -c %s "$work/keys.jsonl") >> 20))" \
  "$(echo "$(date +%s.%N) - $s" | bc)"

"$ks" migrate plan --name bench --source "$source" --target-name bench-dst \
  --wrapped-keys "$work/keys.jsonl" --keep-until 2026-01-01 --out "$work/plan.toml" > /dev/null
server_before=$(hwm "$pid")
s=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/engine.kib" "$ks" migrate apply "$work/plan.toml" --progress none > "$work/report.txt"
secs=$(echo "$(date +%s.%N) - $s" | bc)
grep -q complete "$work/report.txt" || { cat "$work/report.txt"; exit 1; }
printf 'keyshift migrate apply: %d items in %.1f s = %.0f items/s; engine peak RSS %d MiB; server peak RSS %s (before: %s)\n' \
  "$items" "$secs" "$(echo "$items / $secs" | bc -l)" "$(($(cat "$work/engine.kib") >> 10))" "$(hwm "$pid")" "$server_before"
"$bench" naive-rewrap --admin "$admin" --file "$work/keys.jsonl" --target "$naive_target" --count "$naive" --concurrency 64

# Full re-encryption of a tree (8 files), 3-level in and out.
kek=$(call -X POST "$url/keys/bench-kek/create?api-version=2025-07-01" -d '{"kty":"oct-HSM"}' | jq -r .key.kid)
"$ks" keyring create --kek "$kek" --out "$work/keyring.json" > /dev/null
mkdir -p "$work/plain"
for i in $(seq 0 7); do head -c "$((reenc << 17))" /dev/urandom > "$work/plain/f$i"; done
"$ks" encrypt "$work/plain" --keyring "$work/keyring.json" --out "$work/tree" > /dev/null
rm -rf "$work/plain"
"$ks" migrate plan --name reenc --source "$kek" --target-name bench-kek2 --envelope-dir "$work/tree" \
  --mode reencrypt --old-keyring "$work/keyring.json" --target-keyring "$work/keyring2.json" \
  --keep-until 2026-01-01 --out "$work/reenc.toml" > /dev/null
sync
s=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/reenc.kib" "$ks" migrate apply "$work/reenc.toml" --progress none > "$work/reenc.txt"
secs=$(echo "$(date +%s.%N) - $s" | bc)
grep -q complete "$work/reenc.txt" || { cat "$work/reenc.txt"; exit 1; }
printf 'keyshift migrate apply (reencrypt): %d MiB in %.2f s = %.0f MiB/s; engine peak RSS %d MiB\n' \
  "$reenc" "$secs" "$(echo "$reenc / $secs" | bc -l)" "$(($(cat "$work/reenc.kib") >> 10))"
rate=$(echo "$reenc / $secs" | bc -l)

# The anchor: one core's AES-256-GCM rate for decrypting and then encrypting each byte.
speed() { openssl speed "$@" -evp aes-256-gcm -seconds 3 2>/dev/null | awk '/^AES-256-GCM|^aes-256-gcm/ {sub("k", "", $NF); print $NF}'; }
enc=$(speed) dec=$(speed -decrypt)
anchor=$(echo "1000 / (1 / $enc + 1 / $dec) / 1048576" | bc -l)
printf 'openssl speed -evp aes-256-gcm (one core, 16 KiB blocks): encrypt %.0f MB/s, decrypt %.0f MB/s; decrypt then encrypt %.0f MiB/s\n' \
  "$(echo "$enc / 1000" | bc -l)" "$(echo "$dec / 1000" | bc -l)" "$anchor"

# The storage alone, doing what the campaign does to it with no encryption: each of the tree's
# 8 files replaced by as many new bytes, written and synced (around the page cache where the file
# system allows it) and renamed over the old one, which the file system then frees, two files at
# a time. No re-encryption in place can finish sooner than this.
direct=oflag=direct
dd if=/dev/zero of="$work/probe" bs=4096 count=1 $direct 2>/dev/null || direct=
rm -f "$work/probe"
sync
s=$(date +%s.%N)
for p in 0 2 4 6; do
  writers=()
  for f in $p $((p + 1)); do
    (dd if=/dev/zero of="$work/tree/new$f" bs=8M count=$((reenc >> 6)) $direct conv=fsync 2>/dev/null \
      && mv "$work/tree/new$f" "$work/tree/f$f.ksenv") &
    writers+=($!)
  done
  wait "${writers[@]}"  # not the server's pid
done
floor=$(echo "$reenc / ($(date +%s.%N) - $s)" | bc -l)
printf 'storage alone (8 files replaced: written, synced, renamed over; two at a time%s): %.0f MiB/s\n' \
  "${direct:+; O_DIRECT}" "$floor"
printf 'ratios to the anchor: re-encryption %.2f (target 0.70); storage alone %.2f\n' \
  "$(echo "$rate / $anchor" | bc -l)" "$(echo "$floor / $anchor" | bc -l)"
