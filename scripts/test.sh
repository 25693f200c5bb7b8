#!/usr/bin/env bash
# Runs every test of the project: the crate dependency rules, the Rust tests (unit, Wycheproof,
# integration over HTTPS), the end-to-end suites with the official Python and JavaScript SDKs
# against a real `keyshift serve`, and the README tour as written.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== dependency rules"
python3 scripts/check-deps.py

echo "== Rust tests"
cargo test --workspace --locked

echo "== end-to-end: official Python and JavaScript SDKs"
tests/e2e/harness.sh

echo "== README tour"
cargo build --release --locked -p keyshift-cli
scripts/readme-tour.sh
