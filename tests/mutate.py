"""Mutation testing of the judging modules with mutmut: ``python tests/mutate.py [MODULE ...]``.

For each judging module (default: all of ``JUDGES``) the tracked tree is copied to a scratch
folder, mutmut is configured there for that module and the tests that judge it, and run. The
checkout is never written to. Printed per module: mutants, killed (a test failed), timed out (the
mutant made the tests run far longer than unmutated, e.g. a stop rule that never stops: counted as
killed, as mutmut does, once it times out again when run alone), survived, and each survivor by name with its diff.

A survivor is either killed by a new test or explained as equivalent (no test could tell it from
the original) in ``tests/mutation_equivalents.txt``: one line per mutant, ``name@pin  # why``, where
the pin is a digest of the mutant's changed lines (``pin``). Exit status 1 when a module kills under
``GOAL`` of its non-equivalent mutants, an unexplained mutant survives, or an explanation is stale:
its name now names another mutant, or none. ``--pins`` runs only the explained mutants and prints
each one's pin, status and changed lines, to check and pin explanations without the full run.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Each judging module and the tests that judge it (kept small: each module in under 30 minutes on 2 cores).
JUDGES: dict[str, tuple[str, ...]] = {
    "harness/measure/timing.py": ("tests/test_timing.py", "tests/test_judges.py", "tests/test_cuda_clock.py"),
    "harness/measure/stats.py": ("tests/test_stats.py", "tests/test_judges.py"),
    "harness/measure/cuda_clock.py": ("tests/test_cuda_clock.py", "tests/test_timing.py"),
    "harness/measure/correctness.py": ("tests/test_judges.py", "tests/test_runner.py", "tests/test_reference.py",
                                       "tests/test_stats.py"),
    "harness/measure/rounding.py": ("tests/test_judges.py",),
    "harness/results/compare_stats.py": ("tests/test_compare_stats.py", "tests/test_compare.py",
                                         "tests/test_judges.py", "tests/test_compare_relative.py"),
    "harness/results/compare.py": ("tests/test_compare.py", "tests/test_compare_cases.py", "tests/test_judges.py",
                                   "tests/test_compare_edges.py", "tests/test_compare_relative.py"),
    "harness/results/recommend.py": ("tests/test_recommend.py", "tests/test_recommend_logic.py",
                                     "tests/test_recommend_text.py", "tests/test_recommend_control.py",
                                     "tests/test_report.py"),
    "harness/results/tables.py": ("tests/test_tables.py", "tests/test_report.py", "tests/test_recommend.py",
                                  "tests/test_recommend_logic.py", "tests/test_recommend_text.py",
                                  "tests/test_compare_cases.py"),
}
#: Code left unmutated, per module: a pattern of the lines whose expressions are not mutated, and why.
NOT_MUTATED: dict[str, tuple[tuple[str, str], ...]] = {
    "harness/measure/timing.py": ((r"self\.warmup_s < 0 or|not 1 <= self\.min_samples|≥ 0, the time|need 1 ≤ min",
                                   "TimingPolicy's checks run at import (the tests' module-level policies), where "
                                   "mutmut's forced-fail trial would stop collection; test_timing.py's "
                                   "test_policy_limits_are_exact_* pin each bound"),),
}  # fmt: skip
GOAL = 0.90
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.txt"
KILLED = {"killed", "timeout"}


@dataclass(frozen=True)
class Explanation:
    """Why a mutant is equivalent, and the pin of the mutant it was written for (None: not pinned)."""

    pin: str | None
    why: str


def pin(diff: str) -> str:
    """A mutant's changed lines (``show``) as 8 hex digits. mutmut numbers a function's mutants in
    order, so an edit to the function hands a name to another mutant: after the control was added
    to the answer table, the excuse for ``to_dict("RECORDS")`` named a ``failed = None`` mutant."""
    lines = [line[0] + line[1:].strip() for line in diff.splitlines() if line]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()[:8]


def equivalents(path: Path = EQUIVALENTS) -> dict[str, Explanation]:
    """Mutants explained as equivalent: name → its explanation."""
    out = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            entry, _, why = line.partition("#")
            name, _, pinned = entry.strip().partition("@")
            if name:
                out[name] = Explanation(pinned or None, why.strip())
    return out


def prefix(module: str) -> str:
    """The start of every mutant name of ``module``: ``harness.results.recommend.``."""
    return module.removesuffix(".py").replace("/", ".") + "."


def audit(module: str, found: dict[str, str], explained: dict[str, Explanation],
          diffs: dict[str, str]) -> tuple[set[str], list[str]]:
    """The explained mutants of ``module`` whose pin matches the mutant now under that name, and a line
    for each stale explanation: one whose name now names another mutant (``diffs``: each explained
    mutant's changed lines), or none."""
    ours = {n: e for n, e in explained.items() if n.startswith(prefix(module))}
    matched = {n for n, e in ours.items() if n in found and e.pin == pin(diffs[n])}
    stale = []
    for name in sorted(set(ours) - matched):
        if name not in found:
            stale.append(f"{name}: no such mutant now")
        else:
            now = diffs[name].replace("\n", " | ")
            stale.append(f"{name}@{ours[name].pin}: now names {pin(diffs[name])}, {found[name]}: {now}")
    return matched, stale


def scratch_copy() -> Path:
    """The tracked tree (with the working copy's contents) in a fresh folder."""
    dest = Path(tempfile.mkdtemp(prefix="harness-mutate-"))
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def configure(tree: Path, module: str, tests: tuple[str, ...]) -> None:
    quoted = lambda items: "[" + ", ".join(f'"{i}"' for i in items) + "]"  # noqa: E731
    skipped = [pattern.replace("\\", "\\\\") for pattern, _ in NOT_MUTATED.get(module, ())]  # TOML escapes
    with (tree / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write(f"""
[tool.mutmut]
source_paths = {quoted([module])}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]
pytest_add_cli_args_test_selection = {quoted(tests)}
also_copy = ["harness", "variants", "tests"]
do_not_mutate_patterns = {quoted(skipped)}
process_isolation = "forkserver"
""")


def mutate(module: str, children: int, only: tuple[str, ...] | None = None) -> tuple[dict[str, str], Path]:
    """Every mutant of ``module`` and how it ended; with ``only``, those alone are run (the others
    read ``not checked``)."""
    tree = scratch_copy()
    configure(tree, module, JUDGES[module])
    # Forked from a server that has only collected the tests: a fork of a process whose torch thread
    # pools have run can hang on a lock (mutmut then reports a timeout that no mutant caused).
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TRITON_INTERPRET="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    mutmut = [sys.executable, "-m", "mutmut"]

    def run(*names: str, children: int) -> dict[str, str]:
        subprocess.run([*mutmut, "run", "--max-children", str(children), *names], cwd=tree, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # fmt: skip
        listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=tree, env=env, capture_output=True,
                                 text=True, check=False).stdout  # fmt: skip
        return dict(re.findall(r"^\s*(\S+): (.+?)\s*$", listing, flags=re.M))

    if only is not None:  # the mutants are generated, whichever run
        return run(*only, children=children), tree
    found = run(children=children)
    # A forked test process can stall on a lock its parent held and be reported as a timeout; only a
    # mutant that times out again, run alone, is counted as killed by its timeout.
    timed_out = sorted(n for n, s in found.items() if s == "timeout")
    if timed_out:
        found = run(*timed_out, children=1)
    return found, tree


def show(name: str, tree: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=tree, capture_output=True, text=True,
                         check=False).stdout  # fmt: skip
    changed = [line for line in out.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return "\n".join(changed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(JUDGES), help="judging modules (default: all)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="keep the scratch trees (to run mutmut browse there)")
    parser.add_argument("--pins", action="store_true",
                        help="run only the explained mutants; print each one's pin, status and changed lines")
    args = parser.parse_args()
    explained = equivalents()
    failed = False
    for module in args.modules:
        if module not in JUDGES:
            print(f"error: {module} is not a judging module; choose from {', '.join(JUDGES)}", file=sys.stderr)
            return 2
        started = time.monotonic()
        ours = tuple(n for n in explained if n.startswith(prefix(module)))
        if args.pins and not ours:
            continue
        found, tree = mutate(module, args.children, ours if args.pins else None)
        diffs = {n: show(n, tree) for n in ours if n in found}
        equivalent, stale = audit(module, found, explained, diffs)
        if args.pins:
            for name in ours:
                status = found.get(name, "no such mutant")
                print(f"{name}@{pin(diffs[name]) if name in diffs else '-'}  {status}: "
                      f"{diffs.get(name, '').replace(chr(10), ' | ')}")
            for line in stale:
                print(f"  stale explanation: {line}")
            shutil.rmtree(tree, ignore_errors=True)
            failed |= bool(stale)
            continue
        counted = {n: s for n, s in found.items() if n not in equivalent}
        killed = sum(s in KILLED for s in counted.values())
        timeouts = sum(s == "timeout" for s in counted.values())
        survivors = sorted(n for n, s in counted.items() if s not in KILLED)
        score = killed / len(counted) if counted else 0.0
        minutes = (time.monotonic() - started) / 60
        print(f"{module}: {len(found)} mutants, {len(equivalent)} equivalent; killed {killed} of {len(counted)} "
              f"({score:.0%}, {timeouts} by timeout), {len(survivors)} survived, {minutes:.1f} min")  # fmt: skip
        for pattern, why in NOT_MUTATED.get(module, ()):
            print(f"  not mutated: {pattern!r}: {why}")
        for line in stale:
            print(f"  stale explanation: {line}")
        for name in survivors:
            diff = show(name, tree)
            print(f"  survived: {name} ({counted[name]}), pin {pin(diff)}")
            print("    " + diff.replace("\n", "\n    "))
        failed |= score < GOAL or bool(survivors) or bool(stale) or not found
        if args.keep:
            print(f"  scratch tree: {tree}")
        else:
            shutil.rmtree(tree, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
