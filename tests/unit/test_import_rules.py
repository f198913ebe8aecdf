"""The house keeps its shape: rules drawn from the imports of every module the server ships.

A room is a top-level package or module (`core`, `storage`, `api`, `wiring` …). The rules:
- `core/` imports only itself and the standard library: every money rule stays framework-free;
- no circle, between modules or between rooms;
- `api/` is imported only by the composition root (`asgi`, `wiring`), `cli` (and its `commands`)
  and the benchmarks (which drive the app from outside, as the tests do);
- every request the server makes to the outside goes through `egress/`: no other room imports an
  HTTP client.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = {"tests", "docs", "deploy", ".venv", "build", "node_modules", "clients"}
HTTP_CLIENTS = {
    "httpx",
    "httpcore",
    "requests",
    "aiohttp",
    "urllib3",
    "http.client",
    "urllib.request",
}
API_IMPORTERS = {"asgi", "wiring", "cli", "commands", "bench", "api"}
HTTP_ROOMS = {"egress", "bench"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in NOT_SHIPPED or parts[0].startswith(".") or "migrations" in parts:
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imported_names(path: Path) -> set[str]:
    """Every absolute import in the file, wherever it stands (a function-level import counts)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


IMPORTS = {name: _imported_names(path) for name, path in MODULES.items()}


def _room(module: str) -> str:
    return module.split(".", 1)[0]


def _local_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, names in IMPORTS.items():
        edges[module].update(name for name in names if name in MODULES and name != module)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
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
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_tree_is_read() -> None:
    assert {"core", "storage", "api", "realtime", "asgi", "wiring", "cli"} <= {
        _room(m) for m in MODULES
    }


def test_core_imports_only_itself_and_the_standard_library() -> None:
    offenders = {
        module: sorted(
            name
            for name in names
            if _room(name) != "core" and name.split(".")[0] not in sys.stdlib_module_names
        )
        for module, names in IMPORTS.items()
        if _room(module) == "core"
    }
    assert {m: n for m, n in offenders.items() if n} == {}


def test_no_circle_between_modules() -> None:
    assert _cycles(_local_edges()) == []


def test_no_circle_between_rooms() -> None:
    rooms: dict[str, set[str]] = defaultdict(set)
    for module, targets in _local_edges().items():
        rooms[_room(module)].update(_room(t) for t in targets if _room(t) != _room(module))
    assert _cycles(rooms) == []


def test_api_is_imported_only_by_the_composition_root_and_the_cli() -> None:
    importers = {
        _room(module)
        for module, names in IMPORTS.items()
        if any(_room(name) == "api" for name in names if name in MODULES)
    }
    assert importers - API_IMPORTERS == set()


def test_outbound_http_goes_through_egress() -> None:
    offenders = {
        module: sorted(
            n
            for n in names
            if n in HTTP_CLIENTS or n.split(".")[0] in {c for c in HTTP_CLIENTS if "." not in c}
        )
        for module, names in IMPORTS.items()
        if _room(module) not in HTTP_ROOMS
    }
    assert {m: n for m, n in offenders.items() if n} == {}


def test_the_rules_can_fail() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
