#!/usr/bin/env bash
# End-to-end tests of Keyshift with the official Azure SDKs (Python azure-keyvault-keys, JS @azure/keyvault-keys).
#
#   bash tests/e2e/harness.sh            # build, start a server, run both suites
#   KEYSHIFT_BIN=/path/to/keyshift bash tests/e2e/harness.sh
#   bash tests/e2e/harness.sh python     # only one suite (python | js); extra args go to pytest / node
#
# Environment:
#   KEYSHIFT_BIN                use this binary instead of `cargo build -p keyshift-cli`
#   KEYSHIFT_E2E_REQUIRE_HOSTS  if set, the kv2.localhost host-name test fails (instead of skipping) when the
#                               name does not resolve (CI adds "127.0.0.1 kv2.localhost" to /etc/hosts)
#   KEYSHIFT_E2E_REQUIRE_SOFTHSM if set, the PKCS#11 BYOK tests fail (instead of skipping) without SoftHSM2 and
#                               pkcs11-tool (CI installs them)
#   KEYSHIFT_E2E_KEEP           if set, keep the temporary data directory
#   KEYSHIFT_E2E_VENV           Python venv [default: target/e2e-venv]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E="$ROOT/tests/e2e"
cd "$ROOT"

SUITES="${1:-all}"
if [[ $# -gt 0 ]]; then shift; fi
case "$SUITES" in
  all | python | js) ;;
  *) echo "usage: $0 [all | python [pytest args] | js [node --test args]]" >&2; exit 2 ;;
esac
if [[ "$SUITES" == all && $# -gt 0 ]]; then
  echo "runner arguments need a single suite: $0 python|js ARGS..." >&2
  exit 2
fi

log() { printf '[e2e] %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------------------------
# binary
# ---------------------------------------------------------------------------------------------------------------
if [[ -z "${KEYSHIFT_BIN:-}" ]]; then
  log "building keyshift (cargo build -p keyshift-cli)"
  cargo build -p keyshift-cli
  KEYSHIFT_BIN="$ROOT/target/debug/keyshift"
fi
[[ -x "$KEYSHIFT_BIN" ]] || { echo "KEYSHIFT_BIN=$KEYSHIFT_BIN is not executable" >&2; exit 2; }
KEYSHIFT_BIN="$(cd "$(dirname "$KEYSHIFT_BIN")" && pwd)/$(basename "$KEYSHIFT_BIN")"
export KEYSHIFT_BIN

# ---------------------------------------------------------------------------------------------------------------
# server lifecycle
# ---------------------------------------------------------------------------------------------------------------
DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/keyshift-e2e.XXXXXX")"
SERVER_LOG="$DATA_DIR.server.log"
SERVER_PID=""

cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server did not stop on SIGTERM; killing it"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$SERVER_LOG" ]]; then
    log "last server log lines ($SERVER_LOG):"
    tail -n 40 "$SERVER_LOG" >&2 || true
  fi
  if [[ -n "${KEYSHIFT_E2E_KEEP:-}" ]]; then
    log "kept data dir $DATA_DIR and log $SERVER_LOG"
  else
    rm -rf "$DATA_DIR" "$SERVER_LOG"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# two distinct free loopback ports (held open together while picked)
read -r PORT PORT2 < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)

log "starting $KEYSHIFT_BIN serve on 127.0.0.1:$PORT (data dir $DATA_DIR)"
"$KEYSHIFT_BIN" serve --data-dir "$DATA_DIR" --listen "127.0.0.1:$PORT" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

ADMIN="$DATA_DIR/admin.json"
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# wait_health URL CA SECONDS
wait_health() {
  local url="$1" ca="$2" deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    kill -0 "$SERVER_PID" 2>/dev/null || { log "server exited early"; return 1; }
    if curl -fsS --max-time 2 --cacert "$ca" "$url/health" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "timed out waiting for $url/health"
  return 1
}

for _ in $(seq 1 150); do
  [[ -s "$ADMIN" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { log "server exited early"; exit 1; }
  sleep 0.2
done
[[ -s "$ADMIN" ]] || { log "no $ADMIN after 30 s"; exit 1; }
sleep 0.2 # admin.json may be mid-write
CA_CERT="$(json_field "$ADMIN" ca_cert)"
VAULT_URL="$(json_field "$ADMIN" vault_url)"
wait_health "$VAULT_URL" "$CA_CERT" 30
log "default vault ready at $VAULT_URL"

log "creating vault kv2 on port $PORT2"
"$KEYSHIFT_BIN" vault create kv2 --data-dir "$DATA_DIR" --port "$PORT2" >&2
KV2_URL="https://localhost:$PORT2"
KV2_HOST_URL="https://kv2.localhost:$PORT"
wait_health "$KV2_URL" "$CA_CERT" 30
# the host name is served once the certificate has been reissued with kv2.localhost (within ~2 s)
if getent hosts kv2.localhost >/dev/null 2>&1; then
  deadline=$((SECONDS + 30))
  until curl -fsS --max-time 2 --cacert "$CA_CERT" "$KV2_HOST_URL/health" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out waiting for $KV2_HOST_URL/health"; exit 1; }
    sleep 0.2
  done
else
  log "kv2.localhost does not resolve (add '127.0.0.1 kv2.localhost' to /etc/hosts); waiting 3 s for the reissue"
  sleep 3
fi
log "kv2 ready at $KV2_URL and $KV2_HOST_URL"

export KEYSHIFT_E2E_ADMIN="$ADMIN"
export KEYSHIFT_E2E_KV2_URL="$KV2_URL"
export KEYSHIFT_E2E_KV2_HOST_URL="$KV2_HOST_URL"
export KEYSHIFT_E2E_DATA_DIR="$DATA_DIR"
export KEYSHIFT_E2E_SERVER_LOG="$SERVER_LOG"

# ---------------------------------------------------------------------------------------------------------------
# suites
# ---------------------------------------------------------------------------------------------------------------
PY_RC=skipped
JS_RC=skipped

run_python() {
  local venv="${KEYSHIFT_E2E_VENV:-$ROOT/target/e2e-venv}"
  local req="$E2E/python/requirements.txt"
  if [[ ! -x "$venv/bin/python" ]]; then
    log "creating venv $venv"
    python3 -m venv "$venv"
  fi
  if ! cmp -s "$req" "$venv/.e2e-requirements.txt"; then
    log "installing Python dependencies into $venv"
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$req"
    cp "$req" "$venv/.e2e-requirements.txt"
  fi
  log "running the Python suite"
  (cd "$E2E/python" && PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest "$@")
}

run_js() {
  log "installing JS dependencies (npm ci)"
  (cd "$E2E/js" && npm ci --no-audit --no-fund --loglevel=error >&2)
  log "running the JS suite"
  (cd "$E2E/js" && NODE_EXTRA_CA_CERTS="$CA_CERT" node --test --test-concurrency=1 "$@" test/*.test.mjs)
}

if [[ "$SUITES" == all || "$SUITES" == python ]]; then
  PY_RC=0
  run_python "$@" || PY_RC=$?
fi
if [[ "$SUITES" == all || "$SUITES" == js ]]; then
  JS_RC=0
  run_js "$@" || JS_RC=$?
fi

# Last, after both SDK suites: the audit log of the whole run (secret scan, verify, tampering).
AUDIT_RC=skipped
if [[ "$SUITES" == all ]]; then
  AUDIT_RC=0
  log "checking the audit log of the full run"
  KEYSHIFT_E2E_AFTER_RUN=1 run_python test_zz_audit_after_run.py || AUDIT_RC=$?
fi

ok() { [[ "$1" == 0 ]] && echo ok || echo "$1"; }
log "python suite: $(ok "$PY_RC"), js suite: $(ok "$JS_RC"), audit after the run: $(ok "$AUDIT_RC")"
[[ "$PY_RC" == 0 || "$PY_RC" == skipped ]] && [[ "$JS_RC" == 0 || "$JS_RC" == skipped ]] \
  && [[ "$AUDIT_RC" == 0 || "$AUDIT_RC" == skipped ]]
