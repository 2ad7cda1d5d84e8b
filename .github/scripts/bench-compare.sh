#!/usr/bin/env bash
# Compare a run folder with the committed baseline of the device it ran on, and put the Markdown
# into the GitHub job summary ($GITHUB_STEP_SUMMARY; stdout outside Actions).
# Exit 0: no regression, or no baseline for this device yet (a notice says how to make one);
# 1: a regression (or a case that turned wrong); 2: bad input (compare's one-line error).
set -uo pipefail
if [ "$#" -lt 1 ]; then
  echo "usage: bench-compare.sh RUN_DIR" >&2
  exit 2
fi
run_dir="$1"
summary="${GITHUB_STEP_SUMMARY:-/dev/stdout}"
markdown="$(mktemp)"

# exit 3 only when the run is sound and no baseline was committed for its device (its message on
# stdout); a missing or broken run folder is bad input (exit 2, its message on stderr)
baseline="$(python - "$run_dir" <<'PY'
import sys
from harness.results.baselines import BaselineError, NoBaseline, find_baseline_for
try:
    print(find_baseline_for(sys.argv[1]))
except NoBaseline as exc:
    print(exc)
    sys.exit(3)
except BaselineError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
PY
)"
found=$?
if [ "$found" -eq 3 ]; then
  echo "::notice title=No benchmark baseline::${baseline}; the run is uploaded as an artifact"
  {
    echo "## Benchmark comparison skipped"
    echo
    echo "${baseline}"
    echo
    echo "To add one, run on this device model"
    echo "\`python -m harness run --config results/baselines/sweep-<cpu|cuda>.toml --save-baseline\` and commit the folder."
  } >> "$summary"
  exit 0
elif [ "$found" -ne 0 ]; then
  exit 2
fi

# BENCH_THRESHOLD: the slowdown that counts as a regression (compare's default 5% on a quiet GPU;
# shared CPU runners drift 10-20% between processes, see README "Noise").
# BENCH_FAIL_ON_MISSING=true: a case the baseline timed that this run lacks or skipped fails too (the
# sweep is the baseline's own config, so a missing case is a lost variant, not a changed sweep).
# BENCH_RELATIVE_TO=VARIANT: judge each case divided by VARIANT's in its own run (compare --relative-to), so
# that a runner slower or faster than the baseline's machine cancels; VARIANT's own cases are shown, not judged.
extra=()
if [ "${BENCH_FAIL_ON_MISSING:-}" = "true" ]; then
  extra+=(--fail-on-missing)
fi
if [ -n "${BENCH_RELATIVE_TO:-}" ]; then
  extra+=(--relative-to "$BENCH_RELATIVE_TO")
fi
python -m harness compare "$baseline" "$run_dir" --markdown "$markdown" --threshold "${BENCH_THRESHOLD:-0.05}" ${extra[@]+"${extra[@]}"}
rc=$?
if [ -s "$markdown" ]; then
  cat "$markdown" >> "$summary"
fi
if [ "$rc" -eq 1 ]; then
  echo "::error title=Benchmark regression::a case is slower than the baseline beyond the threshold, or a case that was correct is not now (or, with BENCH_FAIL_ON_MISSING, is no longer timed); see the job summary"
fi
exit "$rc"
