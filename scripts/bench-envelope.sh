#!/usr/bin/env bash
# Envelope encryption on this machine, side by side: `keyshift encrypt`/`decrypt` of a 1 GiB file
# (to a file, synced, and to /dev/null), `age` on the same file, `openssl speed` for the
# single-core AES-256-GCM rate, and a 1 GiB tree of 256 files on both cores.
#   scripts/bench-envelope.sh            (ROUNDS=3, SIZE_MIB=1024; needs curl, jq, age, openssl)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-3} size=${SIZE_MIB:-1024}
cargo build --release --quiet -p keyshift-cli --manifest-path "$root/Cargo.toml"
ks=$root/target/release/keyshift
work=$(mktemp -d "${TMPDIR:-/tmp}/ks-envbench.XXXXXX")
pid=
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$ks" serve --data-dir "$work/d" --listen 127.0.0.1:0 > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [[ -s "$work/d/admin.json" ]] && break; sleep 0.1; done
sleep 0.3
admin=$work/d/admin.json
ca=$(jq -r .ca_cert "$admin") url=$(jq -r .vault_url "$admin")
token=$(curl -s --cacert "$ca" "$(jq -r .token_url "$admin")" -d grant_type=client_credentials \
  -d client_id="$(jq -r .client_id "$admin")" --data-urlencode client_secret="$(jq -r .client_secret "$admin")" \
  -d scope=https://vault.azure.net/.default | jq -r .access_token)
kid=$(curl -s --cacert "$ca" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  "$url/keys/bench-kek/create?api-version=2025-07-01" -d '{"kty":"oct-HSM"}' | jq -r .key.kid)
export KEYSHIFT_CREDENTIALS=$admin
"$ks" keyring create --kek "$kid" --out "$work/keyring.json" > /dev/null
age-keygen -o "$work/age.key" 2> /dev/null
recipient=$(age-keygen -y "$work/age.key")

head -c "$((size << 20))" /dev/urandom > "$work/big"
mkdir -p "$work/tree"
for i in $(seq 0 255); do head -c "$((size << 12))" /dev/urandom > "$work/tree/f$i"; done

# seconds COMMAND...: wall time of one run
seconds() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc; }
gibs() { echo "scale=2; $size / 1024 / $1" | bc; }

echo "openssl speed -evp aes-256-gcm (single core), 16384-byte blocks:"
openssl speed -evp aes-256-gcm -seconds 3 2>/dev/null | awk '/^AES-256-GCM|^aes-256-gcm/ {print "  " $NF}'
echo "openssl speed -decrypt -evp aes-256-gcm, 16384-byte blocks:"
openssl speed -decrypt -evp aes-256-gcm -seconds 3 2>/dev/null | awk '/^AES-256-GCM|^aes-256-gcm/ {print "  " $NF}'

printf '%-7s %-44s %8s %8s\n' round what seconds GiB/s
for r in $(seq 1 "$rounds"); do
  row() { printf '%-7s %-44s %8.2f %8s\n' "$r" "$1" "$2" "$(gibs "$2")"; }
  sync
  row "keyshift encrypt -> file (synced)" "$(seconds "$ks" encrypt "$work/big" --keyring "$work/keyring.json" --out "$work/big.ksenv")"
  row "keyshift encrypt -> /dev/null" "$(seconds sh -c "'$ks' encrypt - --keyring '$work/keyring.json' < '$work/big' > /dev/null")"
  row "age -r encrypt -> file" "$(seconds age -r "$recipient" -o "$work/big.age" "$work/big")"
  row "age -r encrypt -> /dev/null" "$(seconds sh -c "age -r '$recipient' < '$work/big' > /dev/null")"
  row "keyshift decrypt -> file (synced)" "$(seconds "$ks" decrypt "$work/big.ksenv" --keyring "$work/keyring.json" --out "$work/big.out")"
  row "keyshift decrypt -> /dev/null" "$(seconds sh -c "'$ks' decrypt - --keyring '$work/keyring.json' < '$work/big.ksenv' > /dev/null")"
  row "age -d -> file" "$(seconds age -d -i "$work/age.key" -o "$work/big.age.out" "$work/big.age")"
  row "age -d -> /dev/null" "$(seconds sh -c "age -d -i '$work/age.key' < '$work/big.age' > /dev/null")"
  cmp -s "$work/big" "$work/big.out" || { echo "round trip differs" >&2; exit 1; }
  rm -rf "$work/tree.enc" "$work/tree.dec"
  row "keyshift encrypt tree (256 files, 2 cores)" "$(seconds "$ks" encrypt "$work/tree" --keyring "$work/keyring.json" --out "$work/tree.enc" 2>/dev/null)"
  row "keyshift decrypt tree (256 files, 2 cores)" "$(seconds "$ks" decrypt "$work/tree.enc" --keyring "$work/keyring.json" --out "$work/tree.dec" 2>/dev/null)"
  rm -f "$work/big.ksenv" "$work/big.out" "$work/big.age" "$work/big.age.out"
done
