"""The import graph of losses/, ablations/, reports/ and tripletlab/ (every import statement,
function-level ones included): no cycle, losses imports none of the others, reports import
ablations only through ablations.results (its read API), and the modules of ablations/ import
only from their own floor or a lower one (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("losses", "ablations", "reports", "tripletlab")
# Lowest first; a module of ablations/ imports only modules of its floor or a lower one.
FLOORS = (
    ("helpers", ("keys", "idx", "sampler", "schedules", "mining", "plugin_import", "evaluate", "executors")),
    ("data", ("data", "pose", "nuisance")),
    ("models", ("model", "plugins", "loss_specs", "baseline_specs")),
    ("configuration", ("config", "grid", "search_section")),
    ("training", ("objectives", "train", "baselines", "classical", "ceiling")),
    ("running", ("store", "migrate", "dask_executor", "batch", "search", "runner", "results")),
)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """-> module -> the project modules it imports (anywhere in the file)."""
    files = {module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files
                            else node.module for a in node.names}
        resolved = set()
        for target in targets:
            while target and target not in files:
                target = target.rpartition(".")[0]
            # A submodule reading its own package's __init__ (tripletlab.cli reads
            # tripletlab.__version__, defined before __init__ imports cli) is not counted.
            if target and target != name and not name.startswith(target + "."):
                resolved.add(target)
        graph[name] = resolved
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """-> one import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def floor_violations(graph: dict[str, set[str]], floors=FLOORS, package: str = "ablations") -> list[str]:
    """-> "a -> b" for each import of a module of `package` from a higher floor (or no floor)."""
    level = {f"{package}.{m}": i for i, (_, mods) in enumerate(floors) for m in mods}
    out = []
    for src, targets in sorted(graph.items()):
        if not src.startswith(package + ".") or src not in level:
            continue
        out += [f"{src} -> {t}" for t in sorted(targets)
                if t.startswith(package + ".") and level.get(t, len(floors)) > level[src]]
    return out


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_losses_imports_only_losses():
    bad = [f"{s} -> {t}" for s, ts in import_graph().items() if s.startswith("losses")
           for t in ts if not t.startswith("losses")]
    assert bad == []


def report_violations(graph: dict[str, set[str]]) -> list[str]:
    """-> "a -> b" for each import by reports of a module of ablations other than its read API."""
    return [f"{s} -> {t}" for s, ts in sorted(graph.items()) if s.startswith("reports")
            for t in sorted(ts) if t.startswith("ablations") and t != "ablations.results"]


def test_reports_import_ablations_only_through_its_read_api():
    assert report_violations(import_graph()) == []


def test_every_ablations_module_has_a_floor():
    placed = {f"ablations.{m}" for _, mods in FLOORS for m in mods}
    assert sorted(m for m in import_graph() if m.startswith("ablations.") and m not in placed) == []


def test_floors_are_one_way():
    assert floor_violations(import_graph()) == []


def test_checker_finds_a_planted_cycle_and_an_upward_import():
    fake = {"ablations.data": {"ablations.config"}, "ablations.config": {"ablations.data"}}
    assert find_cycle(fake) == ["ablations.config", "ablations.data", "ablations.config"]
    assert floor_violations(fake) == ["ablations.data -> ablations.config"]
    assert find_cycle({"ablations.config": {"ablations.data"}, "ablations.data": set()}) is None
    assert report_violations({"reports.verdict": {"ablations.config", "ablations.results", "reports.stats"}}) \
        == ["reports.verdict -> ablations.config"]


@pytest.mark.parametrize("source", ["import ablations.config\n", "def f():\n    from ablations import config\n"])
def test_graph_reads_function_level_imports(tmp_path, source):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "ablations" / "config.py").write_text("")
    (tmp_path / "ablations" / "data.py").write_text(source)
    assert import_graph(tmp_path)["ablations.data"] == {"ablations.config"}
