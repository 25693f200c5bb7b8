#!/usr/bin/env bash
# Runs every test of the project: the crate dependency rules, the Rust tests (unit, Wycheproof,
# integration over HTTPS), the end-to-end suites with the official Python and JavaScript SDKs
# against a real `keyshift serve`, and the README tour as written. Ends with one line totalling
# the tests run by every runner.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run() { "$@" 2>&1 | tee -a "$log"; }

echo "== dependency rules"
run python3 scripts/check-deps.py

echo "== Rust tests"
run cargo test --workspace --locked

echo "== end-to-end: official Python and JavaScript SDKs"
run tests/e2e/harness.sh

echo "== README tour"
cargo build --release --locked -p keyshift-cli
run scripts/readme-tour.sh

# Every step above stops the script on failure (set -e, pipefail), so reaching here means all
# passed; the total is counted from each runner's own summary lines.
python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
passed = failed = 0
for p, f in re.findall(r"^test result: \w+\. (\d+) passed; (\d+) failed", text, re.M):
    passed += int(p); failed += int(f)
for line in re.findall(r"^=+ (.*) in [\d.]+s =+$", text, re.M):  # pytest
    passed += sum(int(n) for n in re.findall(r"(\d+) passed", line))
    failed += sum(int(n) for n in re.findall(r"(\d+) failed", line))
passed += sum(int(n) for n in re.findall(r"^# pass (\d+)$", text, re.M))  # node --test
failed += sum(int(n) for n in re.findall(r"^# fail (\d+)$", text, re.M))
passed += len(re.findall(r"^README tour: passed$", text, re.M))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
