"""The Lock protocol: a stage type whose store the ``lock`` fault can hold locked (every reader and writer of
the stage then waits or fails), e.g. an Iceberg table on a SQLite catalog. The fault runner takes the SQLite
file; this protocol says which stages have one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from pipeline_check.core.plugins import PluginSettings


class Lock(Protocol):
    Settings: ClassVar[type[PluginSettings]]

    @classmethod
    def lockable(cls, settings: Any) -> bool:
        """Whether the stage's store is one the ``lock`` fault acts on (a target this config owns)."""
        ...

    @classmethod
    def file(cls, settings: Any) -> Path | None:
        """The SQLite file the ``lock`` fault holds, where there is one."""
        ...
