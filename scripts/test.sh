#!/usr/bin/env bash
# Runs every test of the project: the crate dependency rules, the Rust tests (unit, Wycheproof,
# integration over HTTPS), the end-to-end suites with the official Python and JavaScript SDKs
# against a real `keyshift serve`, and the README tour as written. Ends with one line totalling
# the tests run by every runner.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
pg_dir=""
cleanup() {
  rm -f "$log"
  if [[ -n "$pg_dir" ]]; then
    scripts/postgres-test-server.sh stop "$pg_dir" || true
    rm -rf "$pg_dir"
  fi
}
trap cleanup EXIT

# The PostgreSQL migration source's tests read KEYSHIFT_TEST_POSTGRES_URL (CI sets it, see .ci/run).
# Without it, a throwaway server is started here when PostgreSQL is installed, and stopped at the
# end; when it is not installed those tests say they are skipped.
if [[ -z "${KEYSHIFT_TEST_POSTGRES_URL:-}" ]] \
  && { [[ -x "${PGBIN:-}/initdb" ]] || compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; }; then
  pg_dir=$(mktemp -d)
  pg_env=$(scripts/postgres-test-server.sh start "$pg_dir")
  export "$pg_env"
fi

run() { "$@" 2>&1 | tee -a "$log"; }

echo "== dependency rules"
run python3 scripts/check-deps.py

echo "== Rust tests"
run cargo test --workspace --locked

echo "== end-to-end: official Python and JavaScript SDKs"
run tests/e2e/harness.sh

echo "== fuzzing: the envelope header and segment parser, briefly (cargo-fuzz, nightly)"
# The seed corpus runs on stable in the Rust tests above; this mutates it for FUZZ_SECONDS per
# target. Without a nightly toolchain (or the registry, to install cargo-fuzz) it is skipped, said.
fuzz_seconds=${FUZZ_SECONDS:-20}
if [[ "$fuzz_seconds" != 0 ]] && cargo +nightly --version > /dev/null 2>&1; then
  if [[ ! -x target/tools/bin/cargo-fuzz ]]; then
    cargo install cargo-fuzz --locked --quiet --root target/tools
  fi
  fuzz_tmp=$(mktemp -d)
  for t in parse_header decrypt_stream; do
    mkdir -p "$fuzz_tmp/$t"
    (cd crates/keyshift-envelope/fuzz && PATH="$PWD/../../../target/tools/bin:$PATH" \
      cargo +nightly fuzz run "$t" "$fuzz_tmp/$t" "corpus/$t" -- -max_total_time="$fuzz_seconds" 2>&1 | tail -3)
    echo "fuzz target $t: no crash in ${fuzz_seconds} s" | tee -a "$log"
  done
  rm -rf "$fuzz_tmp"
else
  echo "fuzzing skipped: no nightly toolchain (or FUZZ_SECONDS=0)"
fi

echo "== README tour"
# What the tour's `cargo run --release` builds (the default members), so that it builds nothing:
# `-p keyshift-cli` alone unifies features differently and made the tour build a second time.
cargo build --release --locked
run scripts/readme-tour.sh

# Every step above stops the script on failure (set -e, pipefail), so reaching here means all
# passed; the total is counted from each runner's own summary lines.
python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
passed = failed = 0
for p, f in re.findall(r"^test result: \w+\. (\d+) passed; (\d+) failed", text, re.M):
    passed += int(p); failed += int(f)
for line in re.findall(r"^=+ (.*) in [\d.]+s(?: \([\d:]+\))? =+$", text, re.M):  # pytest
    passed += sum(int(n) for n in re.findall(r"(\d+) passed", line))
    failed += sum(int(n) for n in re.findall(r"(\d+) failed", line))
passed += sum(int(n) for n in re.findall(r"^# pass (\d+)$", text, re.M))  # node --test
failed += sum(int(n) for n in re.findall(r"^# fail (\d+)$", text, re.M))
passed += len(re.findall(r"^README tour: passed$", text, re.M))
passed += len(re.findall(r"^fuzz target \S+: no crash", text, re.M))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
