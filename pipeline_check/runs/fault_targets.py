"""What a scenario's faults act on, worked out from the config: the stack driver, its Toxiproxy, the
SQLite file of each stage whose type can be locked, and for faults on Kafka brokers the stack's nodes and
the cluster's leadership of the partitions they touch. The fault runner gets these narrow targets, never the
config."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline_check.backends.capabilities import STAGE_TYPES
from pipeline_check.config import PipelineConfig
from pipeline_check.faults.runner import Leadership, Services, Targets
from pipeline_check.faults.steps import FaultStep, broker_target, on_brokers
from pipeline_check.faults.toxiproxy import Toxiproxy


def targets_of(config: PipelineConfig, stack: Services | None = None, steps: Sequence[FaultStep] = ()) -> Targets:
    """What ``config``'s faults (``steps``) act on: ``stack`` (else the stack its ``[faults]`` names), that
    stack's Toxiproxy (or ``[faults] toxiproxy``), the SQLite catalog file of each stage that has one, and
    when a step acts on brokers, the stack's Kafka nodes and the leadership of the Kafka stages' topics and
    of the topics broker targets name."""
    from pipeline_check.stack.local import LocalStack
    from pipeline_check.stack.prepare import node_ids

    owned = config.faults
    url = owned.toxiproxy
    brokers: dict[int, str] = {}
    if owned.stack is not None:
        local = LocalStack.open(owned.stack, run_dir=owned.run_dir)
        stack = stack or local
        url = url or local.spec.toxiproxy
        driven = stack if isinstance(stack, LocalStack) else local  # a stack given runs the faults' services
        brokers = node_ids(driven.spec)
    catalogs = {}
    for section in config.stages:
        lock = STAGE_TYPES.lock(section.type)
        file = lock.file(section.settings) if lock is not None else None
        if file is not None:
            catalogs[section.name] = file
    leadership: Leadership | None = None
    cluster = config.kafka_cluster()
    if cluster is not None and any(on_brokers(step, tuple(brokers.values())) for step in steps):
        from pipeline_check.backends.kafka.leadership import KafkaLeadership

        bootstrap, setting, topics = cluster
        named = [t.topic for step in steps if (t := broker_target(step.target)) is not None]
        leadership = KafkaLeadership(bootstrap, (*topics, *named), setting)
    return Targets(stack, Toxiproxy(url) if url else None, catalogs, brokers, leadership)
