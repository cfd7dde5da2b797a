#!/bin/bash
# `make run` of this checkout against a baseline commit (default 8cdd12b: no answer at the end), each on a fresh
# tree (no .data, no Dagster storage) and then again with nothing changed, in one command (the machine's other load
# hits both alike). Prints each run's wall time and its answer line. Usage: bash bench/make_run.sh [BASE_REV]
# `bash bench/make_run.sh --this-only`: this checkout's fresh and second run only (no baseline tree).
# Note: `make install` re-points the editable install at each tree it runs in; re-run `make install` afterwards.
set -u
THIS_ONLY=0
if [ "${1:-}" = "--this-only" ]; then THIS_ONLY=1; shift; fi
REV=${1:-8cdd12b}
NEW=$(cd "$(dirname "$0")/.." && pwd)
BASE=$(mktemp -d)/base
mkdir -p "$BASE" && git -C "$NEW" archive "$REV" | tar -x -C "$BASE"
(cd "$NEW" && rm -rf .data storage history schedules logs build)
LOGS=$(mktemp -d)
t() {
  local label=$1 dir=$2
  local s=$(date +%s.%N)
  (cd "$dir" && env -u PYTHONPATH -u DOCPLATFORM_DATA_DIR -u DAGSTER_HOME make run > "$LOGS/$label.out" 2>&1)
  local rc=$? e=$(date +%s.%N)
  printf "%-12s rc=%s %6.1f s   %s\n" "$label" $rc "$(echo "$e - $s" | bc)" \
    "$(grep -E '^(Answer|Note|Cited)' "$LOGS/$label.out" | head -2 | tr '\n' ' ' | cut -c1-110)"
}
date -u
if [ $THIS_ONLY = 1 ]; then
  t new-fresh "$NEW"
  t new-second "$NEW"
  uptime
  echo "outputs in $LOGS"
  exit 0
fi
t base-fresh "$BASE"
t new-fresh "$NEW"
t base-second "$BASE"
t new-second "$NEW"
t base-third "$BASE"
echo "outputs in $LOGS"
