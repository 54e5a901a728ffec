"""The Cleanup protocol: a stage type that can delete canaries (``pipeline-check cleanup``).

Canary tags of one run form one range (``canary.tags``: ``2**62 | run << 26 | seq``), every canary's tag is
at or above ``2**62`` and real trade ids are far below it, so a range on the tag selects exactly the
canaries (:class:`Selection`). A cleanup counts what a selection holds per run (:meth:`Cleanup.plan`, a
read) and deletes it (:meth:`Cleanup.delete`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pipeline_check.canary.tags import CANARY_BIT, MAX_RUN, RunId
from pipeline_check.core.errors import ConfigError
from pipeline_check.core.plugins import PluginSettings

_RUN = re.compile(r"^run-([0-9a-f]{1,10})$")


@dataclass(frozen=True, slots=True)
class Selection:
    """The tag range to delete: ``[lo, hi]``."""

    lo: int
    hi: int
    label: str  # "run-1a2b3c4d" or "every canary"

    @classmethod
    def of_run(cls, text: str) -> Selection:
        """The range of the run a report names (``run-1a2b3c4d``)."""
        match = _RUN.match(text.strip().lower())
        value = int(match.group(1), 16) if match else -1
        if not 0 <= value <= MAX_RUN:
            raise ConfigError("--run", text, "is not a run id", "give one as reports show it, e.g. run-167ad57ab")
        run = RunId(value)
        return cls(run.lo, run.hi, str(run))

    @classmethod
    def every_canary(cls) -> Selection:
        return cls(CANARY_BIT, 2**63 - 1, "every canary")


@dataclass(frozen=True, slots=True)
class Found:
    """What a cleanup deletes: canary rows per run, in run order."""

    table: str
    selection: Selection
    rows_per_run: dict[RunId, int]

    @property
    def rows(self) -> int:
        return sum(self.rows_per_run.values())


@dataclass(frozen=True, slots=True)
class Deleted:
    """A committed cleanup."""

    snapshot_id: int | None
    operation: str
    rows: int  # deleted
    left: int  # rows still in the range after the commit (a run still writing)


class Cleanup(Protocol):
    """Deletes canaries from one stage (``where``: its section, for errors). ``system`` names what it
    deletes from, for messages ("Iceberg")."""

    Settings: ClassVar[type[PluginSettings]]
    system: ClassVar[str]

    def __init__(self, settings: Any, where: str) -> None: ...

    def plan(self, selection: Selection) -> Found: ...

    def delete(self, found: Found) -> Deleted: ...
