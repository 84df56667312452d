"""The house as README's Architecture draws it: wings, imports one way, small modules.

Read from the source with ``ast``, so a new import that points back up, a cycle, a private
name used from another module, or a module grown past the limit fails here before review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "src" / "runfleet"
MAX_LINES = 420

# Down the picture: a module may import from a wing of a higher number, or from its own wing.
LAYER: dict[str, float] = {
    "cli": 0,
    "batch": 1,
    "bench": 1,
    "webhooks": 1.5,
    "relay": 1.7,  # the receiver publishes through it; it wakes the fleet (by duck type)
    "fleet": 2,
    "shortcuts": 2.5,  # the fleet's keyword shortcuts over submit
    "engine": 3,
    "kinds": 4,
    "polling": 5,
    "admission": 5,
    "tools": 5,
    "results": 4.5,
    "metrics": 6,  # the fleet and the receiver register their snapshots' metrics
    "logs": 6.5,  # a leaf everyone may log through; it takes key_hint from errors
    "stats": 7,
    "errors": 7,
}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def _runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Imports that run: those under ``if TYPE_CHECKING:`` draw no arrow at run time."""
    out: list[ast.ImportFrom | ast.Import] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                out.append(child)
            visit(child)

    visit(tree)
    return out


def imports(name: str, tree: ast.Module, known: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for each import of a runfleet module."""
    package = name if name in _packages(known) else name.rsplit(".", 1)[0]
    found: list[tuple[str, list[str]]] = []
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("runfleet")]
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        if not base.startswith("runfleet"):
            continue
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.append((sub, []) if sub in known else (base, [alias.name]))
    return found


def _packages(known: set[str]) -> set[str]:
    return {n for n in known if any(o.startswith(n + ".") for o in known)}


def wing(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = modules()
KNOWN = set(GRAPH)
EDGES = {name: imports(name, tree, KNOWN) for name, tree in GRAPH.items()}


def test_every_module_is_small_and_says_what_it_owns() -> None:
    for name, tree in GRAPH.items():
        path = ROOT.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT.parent / name.replace(".", "/") / "__init__.py"
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{name} has {lines} lines"
        assert ast.get_docstring(tree), f"{name} has no module docstring"


def test_no_private_name_is_imported_from_another_module() -> None:
    for name, edges in EDGES.items():
        for target, names in edges:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{name} imports {private} from {target}"


def test_imports_point_down_the_wings_and_the_simulator_stands_apart() -> None:
    for name, edges in EDGES.items():
        if name == "runfleet":
            continue  # the lazy public face names everything
        for target, _ in edges:
            here, there = wing(name), wing(target)
            if here == there or target == "runfleet":
                assert target != "runfleet", f"{name} imports the package root"
                continue
            if here == "sim":
                pytest.fail(f"the simulator imports {target} ({name})")
            if there == "sim":
                continue  # anyone may start a simulator; it imports nothing back
            assert LAYER[here] < LAYER[there], f"{name} imports {target}: an arrow up"


def test_no_import_cycle() -> None:
    graph = {n: {t for t, _ in e if t in KNOWN and t != n} for n, e in EDGES.items()}
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in graph[node]:
            if nxt != "runfleet":
                walk(nxt, [*path, node])
        done.add(node)

    for start in graph:
        if start != "runfleet":
            walk(start, [])
