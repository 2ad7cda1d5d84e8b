#!/usr/bin/env bash
# Compare a run folder with the committed baseline of the device it ran on, and put the Markdown
# into the GitHub job summary ($GITHUB_STEP_SUMMARY; stdout outside Actions).
# Exit 0: no regression, or no baseline for this device yet (a notice says how to make one);
# 1: a regression (or a case that turned wrong); 2: bad input (compare's one-line error).
set -uo pipefail
run_dir="${1:?usage: bench-compare.sh RUN_DIR}"
summary="${GITHUB_STEP_SUMMARY:-/dev/stdout}"
markdown="$(mktemp)"

baseline="$(python - "$run_dir" <<'PY'
import sys
from harness.results.baselines import BaselineError, find_baseline_for
try:
    print(find_baseline_for(sys.argv[1]))
except BaselineError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
PY
)"
found=$?
if [ "$found" -eq 3 ]; then
  echo "::notice title=No benchmark baseline::no committed baseline for this device; the run is uploaded as an artifact"
  {
    echo "## Benchmark comparison skipped"
    echo
    echo "No committed baseline in \`results/baselines/\` matches this device. To add one, run on this device model"
    echo "\`python -m harness run --config results/baselines/sweep-<cpu|cuda>.toml --save-baseline\` and commit the folder."
  } >> "$summary"
  exit 0
elif [ "$found" -ne 0 ]; then
  exit 2
fi

# BENCH_THRESHOLD: the slowdown that counts as a regression (compare's default 5% on a quiet GPU;
# shared CPU runners drift 10-20% between processes, see README "Noise").
python -m harness compare "$baseline" "$run_dir" --markdown "$markdown" --threshold "${BENCH_THRESHOLD:-0.05}"
rc=$?
if [ -s "$markdown" ]; then
  cat "$markdown" >> "$summary"
fi
if [ "$rc" -eq 1 ]; then
  echo "::error title=Benchmark regression::a case is slower than the baseline beyond the threshold; see the job summary"
fi
exit "$rc"
