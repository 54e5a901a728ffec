"""The import rules ARCHITECTURE.md states, checked on the source: layers stay layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "pipeline_check"
PLUGINS = sorted(
    PACKAGE / "backends" / p
    for p in (
        "kafka/topic_probe.py",
        "kafka/group_probe.py",
        "kafka/injector.py",
        "iceberg/probe.py",
        "api/probe.py",
        "websocket/injector.py",
    )
)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def offending(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_validator_never_imports_the_system_under_test(path: Path) -> None:
    assert offending(path, ("compose", "services")) == []


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_plugins_see_only_their_settings_and_context(path: Path) -> None:
    others = tuple(f"pipeline_check.{p.parent.name}.{p.stem}" for p in PLUGINS if p != path)
    forbidden = (
        "pipeline_check.runs.injected",
        "pipeline_check.config",
        "pipeline_check.cli",
        "pipeline_check.reporting",
    )
    assert offending(path, forbidden + others) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "reporting").glob("*.py")), ids=lambda p: p.name)
def test_reporting_consumes_events_only(path: Path) -> None:
    forbidden = (
        "pipeline_check.runs",
        "pipeline_check.cli",
        "pipeline_check.backends",
        "pipeline_check.stack",
    )
    assert offending(path, forbidden) == []


@pytest.mark.parametrize(
    "name",
    [
        "verdict/events",
        "verdict/summary",
        "trace/book",
        "verdict/thresholds",
        "verdict/status",
        "verdict/throughput",
        "verdict/detection_power",
    ],
)
def test_the_model_layer_knows_no_engine_config_or_plugin(name: str) -> None:
    forbidden = (
        "pipeline_check.runs",
        "pipeline_check.config",
        "pipeline_check.backends",
        "pipeline_check.cli",
    )
    assert offending(PACKAGE / f"{name}.py", forbidden) == []
