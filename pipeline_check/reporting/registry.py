"""The reporters a run can have: the console one, and file reporters by name (``json``, ``junit``, ``html``,
or one another distribution registers under the ``pipeline_check.reporters`` entry-point group).

A file reporter is a class taking the path to write and the setting that named it (``--json``: named in
the error when the path is not writable, checked in the constructor so a bad path stops the run before it
starts), with ``handle(event)`` and ``close()`` consuming :mod:`pipeline_check.verdict.events`. Its name is
its CLI option (``--NAME PATH``) and its key in ``[report]``; both derive from this registry, so a new
reporter is one module plus one registration (:meth:`Reporters.add`, or an entry point).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline_check.core.plugins import Registry
from pipeline_check.verdict.events import Event, Handler

if TYPE_CHECKING:
    from rich.console import Console


class FileReporter(Protocol):
    """A handler writing one file per run."""

    def __init__(self, path: Path, *, setting: str) -> None: ...

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...


class Reporters(Registry[FileReporter]):
    """File reporters by name, each with the help its CLI option shows."""

    def __init__(self, builtins: Mapping[str, tuple[str, str]]) -> None:
        targets = {name: target for name, (target, _) in builtins.items()}
        super().__init__("reporter", "pipeline_check.reporters", targets, needs=("handle", "close"))
        self._help = {name: text for name, (_, text) in builtins.items()}

    def register(self, name: str, target: str, help: str = "") -> None:
        """Offer the reporter class ``target`` (``"module:Class"``) as ``name`` in this process."""
        self.add(name, target)
        if help:
            self._help[name] = help

    def help(self, name: str) -> str:
        return self._help.get(name, f"write the {name} report here")


REPORTERS = Reporters(
    {
        "json": ("pipeline_check.reporting.json:JsonReporter", "write the JSON report here"),
        "junit": ("pipeline_check.reporting.junit:JUnitReporter", "write JUnit XML here"),
        "html": ("pipeline_check.reporting.html:HtmlReporter", "write the HTML report here"),
    }
)


def build_handlers(console: Console | None, paths: Mapping[str, Path | None], live: bool = True) -> list[Handler]:
    """The reporters asked for: the console one unless ``console`` is None, a file one per path given
    (``paths``: reporter name -> path), each checking its path is writable now, before anything runs."""
    handlers: list[Handler] = [
        REPORTERS.get(name)(path, setting=f"--{name}") for name, path in paths.items() if path is not None
    ]
    if console is not None:
        from pipeline_check.reporting.console import ConsoleReporter

        handlers.insert(0, ConsoleReporter(console, live=live))
    return handlers
