"""The layer rule (docs/architecture.md, "Layers"): no import cycle between the package's parts.

The graph is read from the source (every `import`, including those inside functions and
under TYPE_CHECKING), not from what happens to be imported at run time. Its nodes are the
top-level modules (`config`, `db`, …) and, per stage folder, three layers: `<stage>.models`
(`models.py`, `*_models.py`: tables, enums, event kinds), `<stage>.routes` (`router.py`,
`*_router.py`) and `<stage>` (everything else: pure logic and services). A stage's models
may be imported by any service; a cycle anywhere is a failure.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import shadoweval
from shadoweval.events.models import EventKind

PACKAGE_DIR = Path(shadoweval.__file__).parent
SKIPPED = {"migrations"}  # alembic scripts: run by alembic, imported by nothing

# Edges that still close a cycle, each with why it is still here. The list may only
# shrink: an entry whose edge no longer exists fails the test, so remove it then.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def node_of(module: str) -> str | None:
    """The graph node of a dotted module name under `shadoweval`; None for the root."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if len(parts) >= 2:
        leaf = parts[1]
        if leaf == "models" or leaf.endswith("_models"):
            return f"{parts[0]}.models"
        if leaf == "router" or leaf.endswith("_router"):
            return f"{parts[0]}.routes"
    return parts[0]


def _imported_modules(
    tree: ast.AST, module: str, is_package: bool, known: set[str]
) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            # `from pkg import a, b` where a and b are modules depends on them, not on pkg.
            if len(submodules) < len(node.names):
                yield target, node.lineno
            for submodule in submodules:
                yield submodule, node.lineno


def _source_files() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if not SKIPPED & set(path.relative_to(PACKAGE_DIR).parts)
    ]


def _all_modules() -> set[str]:
    return {_module_name(path) for path in sorted(PACKAGE_DIR.rglob("*.py"))}


@functools.cache
def import_graph() -> dict[tuple[str, str], list[str]]:
    """(from node, to node) → the `file:line` of each import making that edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    known = _all_modules()
    for path in _source_files():
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target, line in _imported_modules(tree, module, path.name == "__init__.py", known):
            if not target.startswith("shadoweval."):
                continue
            source_node, target_node = node_of(module), node_of(target)
            if not source_node or not target_node or source_node == target_node:
                continue
            if not SKIPPED & {source_node, target_node}:
                where = f"{path.relative_to(PACKAGE_DIR.parent)}:{line}"
                edges.setdefault((source_node, target_node), []).append(where)
    return edges


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), sorted."""
    nodes = sorted({n for edge in edges for n in edge})
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in sorted(edges):
        successors[a].append(b)
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in successors[node]:
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return sorted(components)


def test_cycle_finder_sees_a_cycle_and_a_chain() -> None:
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert cycles({("a", "b"), ("b", "c")}) == []


def test_node_of_puts_models_and_routes_in_their_own_layer() -> None:
    assert node_of("shadoweval.ingest.models") == "ingest.models"
    assert node_of("shadoweval.alerts.delivery_models") == "alerts.models"
    assert node_of("shadoweval.ingest.litellm_router") == "ingest.routes"
    assert node_of("shadoweval.ingest.adapters.litellm") == "ingest"
    assert node_of("shadoweval.config") == "config"
    assert node_of("shadoweval") is None


def test_no_package_import_cycle_outside_the_allow_list() -> None:
    edges = import_graph()
    remaining = set(edges) - set(ALLOWED_CYCLE_EDGES)
    found = cycles(remaining)
    detail = {
        tuple(component): {
            f"{a} -> {b}": edges[a, b][:3]
            for a, b in sorted(remaining)
            if a in component and b in component
        }
        for component in found
    }
    assert found == [], f"package import cycles: {detail}"


def test_allow_list_only_names_edges_that_still_close_a_cycle() -> None:
    edges = import_graph()
    stale = [edge for edge in ALLOWED_CYCLE_EDGES if edge not in edges]
    assert stale == [], f"edges gone, remove them from ALLOWED_CYCLE_EDGES: {stale}"
    components = cycles(set(edges))
    for edge in ALLOWED_CYCLE_EDGES:
        in_cycle = any(edge[0] in c and edge[1] in c for c in components)
        assert in_cycle, f"{edge} no longer closes a cycle: remove it from the allow-list"


def test_bottom_layers_import_no_service() -> None:
    """Tables, enums and event kinds sit at the bottom: a models module imports only other
    models modules and the leaf modules (db, config, exceptions, sql, redaction defaults)."""
    leaves = {"db", "config", "exceptions", "sql", "redaction_defaults"}
    edges = import_graph()
    upward = {
        edge: where
        for edge, where in edges.items()
        if edge[0].endswith(".models")
        and not edge[1].endswith(".models")
        and edge[1] not in leaves
        and edge not in ALLOWED_CYCLE_EDGES
    }
    assert upward == {}


def test_event_kinds_keep_their_stored_strings() -> None:
    # Stored in event.kind and accepted by GET /v1/events?kind=…: never renamed.
    assert {kind.value for kind in EventKind} == {
        "model_change",
        "judge_changed",
        "quality_drop",
        "budget_exhausted",
        "sampling_shortfall",
    }
    assert f"{EventKind.MODEL_CHANGE}|x" == "model_change|x"
