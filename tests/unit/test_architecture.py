"""The import rules ARCHITECTURE.md states, checked on the source: layers stay layers.

The layer table is read from ARCHITECTURE.md itself, so the doc and the code cannot drift: every top-level
module and package of ``pipeline_check`` sits in exactly one layer of the table, every entry of the table
exists, a module imports only from its own package or the layers below its own (packages of one layer never
import each other), and no import cycle exists. Lazy imports (inside functions) count like any other.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "pipeline_check"
DOC = ROOT / "ARCHITECTURE.md"
TABLE_MARK = "<!-- layers: read by tests/unit/test_architecture.py -->"
BACKENDS = PACKAGE / "backends"
SYSTEMS = sorted(p.name for p in BACKENDS.iterdir() if (p / "__init__.py").exists())


@functools.cache
def layers() -> list[tuple[str, list[str]]]:
    """(layer, its entries: ``cli`` for cli.py, ``runs`` for runs/) from the doc's table, top to bottom."""
    text = DOC.read_text()
    assert TABLE_MARK in text, f"ARCHITECTURE.md lost its layer table (marked {TABLE_MARK})"
    rows = []
    for line in text.split(TABLE_MARK, 1)[1].strip().splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if set(cells[0]) <= {"-", ":"} or cells[0] == "layer":
            continue
        entries = [e.removesuffix(".py").rstrip("/") for e in re.findall(r"`([\w.]+/?)`", cells[1])]
        rows.append((cells[0], entries))
    assert rows, "the layer table has no rows"
    return rows


def entry_of(module: str) -> str:
    """The top-level entry a module belongs to: ``pipeline_check.runs.plan`` -> ``runs``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


@functools.cache
def imports(path: Path) -> frozenset[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports count too); ``from package import
    module`` is the module."""
    known = modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return frozenset(found)


def offending(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))


def own_module(path: Path) -> str:
    return next(name for name, p in modules().items() if p == path)


def sources() -> Iterator[Path]:
    return iter(sorted(PACKAGE.rglob("*.py")))


def ids(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


# -- the doc's layer table against the tree ----------------------------------------------------------------


def test_every_package_sits_in_one_documented_layer_and_every_documented_one_exists() -> None:
    documented = [e for _, entries in layers() for e in entries]
    assert len(documented) == len(set(documented)), f"an entry sits in two layers: {documented}"
    on_disk = {p.stem for p in PACKAGE.glob("*.py")}
    on_disk |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert sorted(on_disk - set(documented)) == [], "packages or modules the layer table does not name"
    assert sorted(set(documented) - on_disk) == [], "layer table entries that do not exist"


@pytest.mark.parametrize("path", list(sources()), ids=ids)
def test_a_module_imports_only_its_own_package_and_the_layers_below(path: Path) -> None:
    rank = {entry: i for i, (_, entries) in enumerate(layers()) for entry in entries}
    mine = entry_of(own_module(path))
    back = []
    for module in imports(path):
        if not module.startswith("pipeline_check"):
            continue
        other = entry_of(module)
        if other != mine and rank[other] <= rank[mine]:
            back.append(f"{module} ({'same layer' if rank[other] == rank[mine] else 'a layer above'})")
    assert sorted(back) == []


def test_no_import_cycle() -> None:
    known = modules()
    graph = {m: {i for i in imports(p) if i in known and i != m} for m, p in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                cycles.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


# -- the rules beside the layers -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(sources()), ids=ids)
def test_the_validator_never_imports_the_system_under_test(path: Path) -> None:
    assert offending(path, ("compose", "services")) == []


BACKEND_MODULES = sorted(p for system in SYSTEMS for p in (BACKENDS / system).rglob("*.py"))


@pytest.mark.parametrize("path", BACKEND_MODULES, ids=ids)
def test_backends_see_only_their_settings_and_context(path: Path) -> None:
    """A backend package reaches the run only through the protocols of backends/ and the context it is given:
    never a run, the config, the CLI, a reporter, or another backend."""
    mine = path.relative_to(BACKENDS).parts[0]
    others = tuple(f"pipeline_check.backends.{s}" for s in SYSTEMS if s != mine)
    forbidden = ("pipeline_check.runs", "pipeline_check.config", "pipeline_check.cli", "pipeline_check.reporting")
    assert offending(path, forbidden + others) == []


@pytest.mark.parametrize("path", sorted(BACKENDS.glob("*.py")), ids=ids)
def test_the_backend_protocols_name_no_backend(path: Path) -> None:
    """The protocols and the capability registry know backends by "module:Class" text only (imported lazily)."""
    assert offending(path, tuple(f"pipeline_check.backends.{s}" for s in SYSTEMS)) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "reporting").glob("*.py")), ids=ids)
def test_reporting_consumes_events_only(path: Path) -> None:
    forbidden = ("pipeline_check.runs", "pipeline_check.cli", "pipeline_check.backends", "pipeline_check.stack")
    assert offending(path, forbidden) == []


MODEL = sorted([*(PACKAGE / "verdict").glob("*.py"), *(PACKAGE / "trace").glob("*.py")])


@pytest.mark.parametrize("path", MODEL, ids=ids)
def test_the_model_layer_knows_no_run_config_or_backend(path: Path) -> None:
    forbidden = ("pipeline_check.runs", "pipeline_check.config", "pipeline_check.backends", "pipeline_check.cli")
    assert offending(path, forbidden) == []
