"""The shape of the code: no import loops between modules, and the committed baselines still readable."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.results import compare, merge
from harness.results.record import CaseResult
from harness.results.store import RunFolder, load_results, to_frame

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "variants")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the packages → the modules of the packages it imports, anywhere in its body
    (function-level and ``TYPE_CHECKING`` imports included: a loop there is a loop in the design)."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_import_graph_has_no_loops() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import loop: " + " → ".join(cycle or [])


def test_the_loop_finder_finds_a_loop() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_core_module_imports_a_variant_implementation() -> None:
    """The harness depends on the variants' small API (registry, tags, reference, weights, and the
    contexts' registry and swap), never on one variant's or one network's module."""
    api = {"variants.registry", "variants.tags", "variants.reference", "variants.weights", "variants.builtin",
           "variants.contexts", "variants.swap"}
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("harness.") and name != "harness.testing":
            plugins = sorted(t for t in targets if t.startswith("variants") and t not in api)
            assert not plugins, f"{name} imports {plugins}"


def present(row: dict) -> dict:
    """The row's values, the empty ones left out (None, or the empty ``context`` of a block alone)."""
    return {k: v for k, v in row.items() if v is not None and not (k == "context" and v == "") and k != "schema"}


BASELINES = sorted(p for p in (ROOT / "results" / "baselines").rglob("results.jsonl"))


@pytest.mark.parametrize("jsonl", BASELINES, ids=lambda p: str(p.parent.relative_to(ROOT / "results" / "baselines")))
def test_a_committed_baseline_loads_compares_and_merges(jsonl: Path, tmp_path: Path) -> None:
    folder = RunFolder(jsonl.parent, create=False)
    rows = folder.rows()
    results = [CaseResult.from_row(row) for row in rows]
    assert rows and len(results) == len(rows)
    for row, result in zip(rows, results, strict=True):
        # the record keeps every column it read: writing it back gives the row again (an absent
        # column and an empty one are the same to every reader; older rows have no schema)
        again = result.to_row()
        assert present(again) == present(row)
        assert CaseResult.from_row(again) == result
    assert len(to_frame(rows)) == len(rows)
    loaded = load_results(jsonl.parent)
    assert loaded.rows and not any("cannot" in n for n in loaded.notes)
    same = compare.compare(jsonl.parent, jsonl.parent)
    assert not same.failed  # against itself: only cases broken on both sides are listed, each unchanged
    assert all(c.baseline_status == c.current_status and c.baseline_status != "ok" for c in same.status_changes)
    merged = merge.merge([jsonl.parent], tmp_path / "merged")
    assert merged.rows == len(rows)
