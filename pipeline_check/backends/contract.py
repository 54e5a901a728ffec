"""The ContractReader protocol: a stage type's reader of what the stage holds, for ``[contract]``.

A contract reader takes the stage's own settings model (the probe's), reads the stage as it is now and
compares it with the stage's declared contract (:mod:`pipeline_check.verdict.contract_diff` does the
comparing), or, for ``pipeline-check contract --snapshot``, says what it holds as a starting
``[contract.STAGE]`` table. ``parts`` names the contract parts a stage of its type can hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pipeline_check.core.plugins import PluginSettings
from pipeline_check.verdict.contract_spec import StageContract
from pipeline_check.verdict.figures import ContractFigures, Difference
from pipeline_check.verdict.response_times import ResponseTimes

SNAPSHOT_SAMPLE = 20  # records a snapshot reads to tell a stage's fields


@dataclass(frozen=True, slots=True)
class ContractContext:
    """What a contract reader gets besides the stage's settings."""

    stage: str
    responses: ResponseTimes  # every API request is timed into the run's API response times
    symbols: tuple[str, ...]  # what an API is asked about
    now_ms: int  # wall-clock milliseconds: recent windows end here


@dataclass(slots=True)
class Findings:
    """What the readers found, stage after stage."""

    differences: list[Difference] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # "iceberg: 10 columns"
    not_applicable: list[str] = field(default_factory=list)  # parts this configuration cannot check
    unchecked: list[str] = field(default_factory=list)  # parts that had nothing to check (an empty topic)

    def figures(self) -> ContractFigures:
        return ContractFigures(
            tuple(self.differences), tuple(self.checked), tuple(self.not_applicable), tuple(self.unchecked)
        )


class ContractReader(Protocol):
    """Reads one stage for its contract. ``check`` adds to ``found`` what the stage holds against ``spec``;
    ``snapshot`` is what it holds now, as a ``[contract.STAGE]`` table (data); either raises
    ``EndpointError`` when the stage cannot be read."""

    Settings: ClassVar[type[PluginSettings]]
    parts: ClassVar[tuple[str, ...]]  # of "columns", "fields", "status"

    def __init__(self, settings: Any, ctx: ContractContext) -> None: ...

    async def check(self, spec: StageContract, found: Findings) -> None: ...

    async def snapshot(self) -> dict[str, Any]: ...
