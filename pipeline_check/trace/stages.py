"""The stage table: every stage pipeline-check knows, declared once.

A stage is a place a canary can be seen. Each has an upstream (where its latency is measured from) and
the probe type that observes it by default; a config section ``[stages.NAME]`` may pick another probe
(``type``), and may declare a stage this table does not know (``type`` and ``upstream`` then required).
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "source"


@dataclass(frozen=True, slots=True)
class StageDef:
    """One stage: its name, where its latency is measured from, and the probe that watches it."""

    name: str
    upstream: str
    probe: str
    # an acknowledgement beside the data path (offsets committed), never where freshness is measured
    branch: bool = False
    doc: str = ""


STAGE_TABLE: tuple[StageDef, ...] = (
    StageDef("kafka", SOURCE, "kafka_topic", doc="record in the raw topic"),
    # A pipeline may commit offsets before or after it writes the table, so the table's latency is
    # measured from Kafka, not from the commit.
    StageDef("consumer", "kafka", "consumer_group", branch=True, doc="offset committed by the pipeline's group"),
    StageDef("iceberg", "kafka", "iceberg", doc="row live in a committed snapshot"),
    StageDef("api", "iceberg", "api", doc="returned by the query API"),
)
BUILTIN = {stage.name: stage for stage in STAGE_TABLE}


@dataclass(frozen=True, slots=True)
class Route:
    """The configured stages in data-path order, each with the nearest configured stage (or the source)
    its latency is measured from, and the stage where freshness is measured: the end of the longest path
    that is not a branch."""

    stages: tuple[str, ...]
    upstream: dict[str, str]
    final: str

    @classmethod
    def of(cls, declared: dict[str, tuple[str, bool]]) -> Route:
        """``declared``: stage -> (declared upstream, branch), in config order. Built-in stages keep the
        table's order; others follow their upstream. An upstream that is not configured is skipped over
        along the table (``api`` without ``iceberg`` is measured from ``kafka``)."""
        if not declared:
            raise ValueError("a route needs at least one stage")

        def resolve(up: str) -> str:
            while up != SOURCE and up not in declared:
                up = BUILTIN[up].upstream if up in BUILTIN else SOURCE
            return up

        upstream = {name: resolve(up) for name, (up, _) in declared.items()}
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...] = ()) -> None:
            if name in order:
                return
            if name in path:
                raise ValueError(f"stages form a cycle through {name!r}")
            if upstream[name] != SOURCE:
                visit(upstream[name], (*path, name))
            order.append(name)

        table = [s.name for s in STAGE_TABLE]
        for name in sorted(declared, key=lambda n: table.index(n) if n in table else len(table)):
            visit(name)

        def depth(name: str) -> int:
            return 0 if name == SOURCE else 1 + depth(upstream[name])

        # freshness is measured at the end of the longest data path (a branch is an acknowledgement)
        on_path = [name for name in order if not declared[name][1]] or order
        final = max(reversed(on_path), key=depth)
        return cls(tuple(order), upstream, final)
