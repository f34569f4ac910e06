"""The architecture as a test: imports only go downward between reaper's parts, no module imports
itself back through others, and only the backends touch the SDKs (docs/architecture.md).

The import graph is read from the source with `ast`, every `import` counted wherever it stands
(module level, inside a function, under `if TYPE_CHECKING:`): a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reaper"

# Higher imports lower; equal ranks (policy/audit, backends/emulators) do not import each other.
RANKS: Mapping[str, int] = {
    "commands": 6,
    "service": 5,
    "engine": 4,
    "policy": 3,
    "audit": 3,
    "backends": 2,
    "emulators": 2,
    "ground": 1,
}
ENTRY_POINTS = {"reaper.cli", "reaper.__main__"}  # the command line: part of the commands layer
GROUND = {"reaper", "reaper.errors", "reaper.jobs", "reaper.redact", "reaper.untrusted"}
SDKS = ("boto3", "botocore", "tapipy", "requests", "urllib3", "apprise")
MAX_TOP_LEVEL_MODULES = 8

Edge = tuple[str, str]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The part a module belongs to; raises KeyError for a module no part owns."""
    if module in ENTRY_POINTS:
        return "commands"
    if module in GROUND:
        return "ground"
    part = module.split(".")[1]
    if part not in RANKS:
        raise KeyError(f"{module} belongs to no part: add it to RANKS or GROUND")
    return part


def imported_modules(
    tree: ast.AST, module: str, is_package: bool, known: set[str]
) -> Iterator[str]:
    """Every module of `known` that `tree` imports (`from x import y` counts x.y when y is one)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)


def read_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module → reaper modules it imports, module → top-level packages it imports)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    known = set(files)
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        names = set(imported_modules(tree, module, path.name == "__init__.py", known))
        internal[module] = {n for n in names if n in known and n != module}
        external[module] = {n.split(".")[0] for n in names if not n.startswith("reaper")}
    return internal, external


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[Edge]:
    """Edges from one part to a part of the same or a higher rank."""
    bad = []
    for source, targets in graph.items():
        for target in targets:
            src, dst = part_of(source), part_of(target)
            if src != dst and RANKS[dst] >= RANKS[src]:
                bad.append((source, target))
    return sorted(bad)


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


GRAPH, EXTERNAL = read_graph()


def test_every_module_belongs_to_a_part() -> None:
    assert {m: part_of(m) for m in GRAPH}


def test_imports_only_go_downward() -> None:
    assert upward_imports(GRAPH) == []


def test_no_import_cycles_between_modules() -> None:
    assert find_cycles(GRAPH) == []


def test_only_backends_import_the_sdks_and_http_clients() -> None:
    offenders = {m: EXTERNAL[m] & set(SDKS) for m in EXTERNAL if part_of(m) != "backends"}
    assert {m: s for m, s in offenders.items() if s} == {}


def test_the_top_level_holds_few_modules() -> None:
    top = [p for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(p.name for p in top)


def test_each_part_says_what_it_owns_and_may_import() -> None:
    for part in RANKS.keys() - {"ground"}:
        doc = ast.get_docstring(ast.parse((PACKAGE / part / "__init__.py").read_text()))
        assert doc and "import" in doc, part


# The checker itself, on small graphs: it must fail on what it exists to catch.
@pytest.mark.parametrize(
    ("edge", "expected"),
    [
        (("reaper.jobs", "reaper.service.metrics"), True),  # ground → service
        (("reaper.audit.writer", "reaper.engine.decide"), True),  # audit → engine
        (("reaper.policy.model", "reaper.audit.writer"), True),  # same rank, other part
        (("reaper.backends.tapis", "reaper.emulators.tapis"), True),
        (("reaper.engine.sweep", "reaper.audit.writer"), False),
        (("reaper.cli", "reaper.commands.run"), False),
    ],
)
def test_the_checker_flags_upward_edges(edge: Edge, expected: bool) -> None:
    graph = {edge[0]: {edge[1]}}
    assert (upward_imports(graph) == [edge]) is expected


def test_the_checker_finds_a_cycle_inside_one_part() -> None:
    graph = {"reaper.policy.a": {"reaper.policy.b"}, "reaper.policy.b": {"reaper.policy.a"}}
    assert find_cycles(graph) == [["reaper.policy.a", "reaper.policy.b"]]


def test_the_graph_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    root = tmp_path / "reaper"
    (root / "engine").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "jobs.py").write_text("def f():\n    from reaper.engine import sweep\n")
    (root / "engine" / "__init__.py").write_text("")
    (root / "engine" / "sweep.py").write_text("from .. import jobs\nimport boto3\n")
    internal, external = read_graph(root)
    assert internal["reaper.jobs"] == {"reaper.engine", "reaper.engine.sweep"}
    assert internal["reaper.engine.sweep"] == {"reaper", "reaper.jobs"}
    assert external["reaper.engine.sweep"] == {"boto3"}
