"""Event handlers that report a run: console, JSON, JUnit XML, HTML. No command-line code in here."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pipeline_check.reporting.console import ConsoleReporter
from pipeline_check.reporting.html import HtmlReporter
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.reporting.junit import JUnitReporter
from pipeline_check.verdict.events import Handler

__all__ = ["ConsoleReporter", "HtmlReporter", "JUnitReporter", "JsonReporter", "build_handlers"]


def build_handlers(
    console: Console | None,
    json_path: Path | None,
    junit_path: Path | None,
    live: bool = True,
    html_path: Path | None = None,
) -> list[Handler]:
    """The reporters asked for: the console one unless ``console`` is None, a file one per path given."""
    handlers: list[Handler] = []
    if json_path is not None:
        handlers.append(JsonReporter(json_path))  # checks the path is writable: before anything runs
    if junit_path is not None:
        handlers.append(JUnitReporter(junit_path))
    if html_path is not None:
        handlers.append(HtmlReporter(html_path))
    if console is not None:
        handlers.insert(0, ConsoleReporter(console, live=live))
    return handlers
