#!/usr/bin/env bash
# Runs the README's tour as written: its bash blocks in one shell, its python block with the
# end-to-end venv's Python, in a scratch copy of the repository's root so the tour's
# ./keyshift-data does not touch a developer's own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${KEYSHIFT_TOUR_PYTHON:-$root/target/e2e-venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$root/README.md" "$work" <<'PY'
import re, sys, pathlib
text = pathlib.Path(sys.argv[1]).read_text()
tour = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
out = pathlib.Path(sys.argv[2])
script = ["set -euo pipefail"]
for i, (lang, body) in enumerate(re.findall(r"```(bash|python)\n(.*?)```", tour, re.S)):
    if lang == "bash":
        script.append(body)
        # Bookkeeping, not part of the tour: remember background jobs so a failed tour's
        # server can be stopped without touching any other keyshift process.
        script.append('jobs -p >> "$TOUR_DIR/jobs"')
    else:
        (out / f"tour_{i}.py").write_text(body)
        script.append(f'"$TOUR_PYTHON" "$TOUR_DIR/tour_{i}.py"')
(out / "tour.sh").write_text("\n".join(script))
PY

# The tour runs from the repository root (it says `cargo run`), against a fresh data directory.
cd "$root"
if [ -e keyshift-data ]; then
  echo "readme-tour: ./keyshift-data exists; move it away first (the tour starts from a fresh one)" >&2
  exit 1
fi
cleanup() {
  # If the tour failed before its last step, its server is still running.
  if [ -f "$work/jobs" ]; then
    xargs -r kill < "$work/jobs" 2>/dev/null || true
  fi
  rm -rf "$root/keyshift-data" "$root/keyshift.log" "$work"
}
trap cleanup EXIT
TOUR_PYTHON="$python" TOUR_DIR="$work" bash ${KEYSHIFT_TOUR_TRACE:+-x} "$work/tour.sh"
echo "README tour: passed"
