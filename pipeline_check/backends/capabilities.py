"""The capability registry: what pipeline-check can do with a stage of each type, and the source types.

A stage type is registered once (:class:`StageType`) with the capabilities it offers, each a
``"module:Class"`` path imported on first use, so a run imports only the backends its config names (no
pyiceberg without an Iceberg stage). Every capability class takes the stage's own settings model (its
``Settings``, the probe's), so ``[stages.NAME]`` configures them all:

==========  ===============================================================  ============================
capability  what it does                                                     entry-point group
==========  ===============================================================  ============================
probe       follows canaries at the stage (every stage type has one)         ``pipeline_check.probes``
sampler     samples the stage's freshness for passive runs                   ``pipeline_check.samplers``
contract    reads what the stage holds for ``[contract]`` and ``--snapshot``   ``pipeline_check.contracts``
cleanup     deletes canaries from the stage (``pipeline-check cleanup``)      ``pipeline_check.cleanups``
load        asks the stage what its users would, concurrently (API load)     ``pipeline_check.loads``
lock        says which store the ``lock`` fault may hold (a SQLite catalog)   ``pipeline_check.locks``
==========  ===============================================================  ============================

The run modes, the contract check, the config loader and the CLI ask this registry what a type offers;
nothing outside a backend package branches on a type name. In a process: ``STAGE_TYPES.add("warehouse",
StageType(probe="my.warehouse:Probe", sampler="my.warehouse:Sampler"))``; from another distribution, one
entry point per capability under the groups above, named after the stage type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pipeline_check.backends.cleanup import Cleanup
from pipeline_check.backends.contract import ContractReader
from pipeline_check.backends.injector import Injector
from pipeline_check.backends.load import Load
from pipeline_check.backends.lock import Lock
from pipeline_check.backends.probe import Probe
from pipeline_check.backends.sampler import Sampler
from pipeline_check.core.plugins import Registry


@dataclass(frozen=True, slots=True)
class StageType:
    """One stage type's capabilities, each a ``"module:Class"`` path (None: not offered)."""

    probe: str
    sampler: str | None = None
    contract: str | None = None
    cleanup: str | None = None
    load: str | None = None
    lock: str | None = None


BUILTIN_STAGE_TYPES: dict[str, StageType] = {
    "kafka_topic": StageType(
        probe="pipeline_check.backends.kafka.topic_probe:KafkaTopicProbe",
        sampler="pipeline_check.backends.kafka.topic_sampler:KafkaTopicSampler",
        contract="pipeline_check.backends.kafka.contract:TopicContract",
    ),
    "consumer_group": StageType(
        probe="pipeline_check.backends.kafka.group_probe:ConsumerGroupProbe",
        sampler="pipeline_check.backends.kafka.group_sampler:ConsumerGroupSampler",
    ),
    "iceberg": StageType(
        probe="pipeline_check.backends.iceberg.probe:IcebergProbe",
        sampler="pipeline_check.backends.iceberg.sampler:IcebergSampler",
        contract="pipeline_check.backends.iceberg.contract:TableContract",
        cleanup="pipeline_check.backends.iceberg.cleanup:IcebergCleanup",
        lock="pipeline_check.backends.iceberg.lock:CatalogLock",
    ),
    "api": StageType(
        probe="pipeline_check.backends.api.probe:ApiProbe",
        sampler="pipeline_check.backends.api.sampler:ApiSampler",
        contract="pipeline_check.backends.api.contract:ApiContract",
        load="pipeline_check.backends.api.load:ApiLoad",
    ),
}

# capability -> (what one is called in messages, its entry-point group)
CAPABILITIES: dict[str, tuple[str, str]] = {
    "probe": ("probe", "pipeline_check.probes"),
    "sampler": ("sampler", "pipeline_check.samplers"),
    "contract": ("contract reader", "pipeline_check.contracts"),
    "cleanup": ("cleanup", "pipeline_check.cleanups"),
    "load": ("load", "pipeline_check.loads"),
    "lock": ("lock", "pipeline_check.locks"),
}


class StageTypes:
    """The stage types and their capabilities: one plugin registry per capability, keyed by type name."""

    def __init__(self, builtins: Mapping[str, StageType]) -> None:
        def registry(capability: str) -> Registry[Any]:
            kind, group = CAPABILITIES[capability]
            declared = {name: getattr(t, capability) for name, t in builtins.items()}
            return Registry(kind, group, {name: target for name, target in declared.items() if target})

        self.probes: Registry[Probe] = registry("probe")
        self.samplers: Registry[Sampler] = registry("sampler")
        self.contracts: Registry[ContractReader] = registry("contract")
        self.cleanups: Registry[Cleanup] = registry("cleanup")
        self.loads: Registry[Load] = registry("load")
        self.locks: Registry[Lock] = registry("lock")

    def add(self, name: str, stage: StageType) -> None:
        """Offer a stage type in this process (beside a test suite or an application): one registration."""
        for f in fields(stage):
            target = getattr(stage, f.name)
            if target is not None:
                self._registry(f.name).add(name, target)

    def names(self) -> list[str]:
        """Every stage type (each has a probe)."""
        return self.probes.names()

    def offers(self, name: str, capability: str) -> bool:
        """Whether stage type ``name`` offers ``capability`` (nothing is imported)."""
        return name in self._registry(capability).names()

    def sampler(self, name: str) -> type[Sampler] | None:
        return self.samplers.get(name) if self.offers(name, "sampler") else None

    def contract(self, name: str) -> type[ContractReader] | None:
        return self.contracts.get(name) if self.offers(name, "contract") else None

    def cleanup(self, name: str) -> type[Cleanup] | None:
        return self.cleanups.get(name) if self.offers(name, "cleanup") else None

    def load(self, name: str) -> type[Load] | None:
        return self.loads.get(name) if self.offers(name, "load") else None

    def lock(self, name: str) -> type[Lock] | None:
        return self.locks.get(name) if self.offers(name, "lock") else None

    def _registry(self, capability: str) -> Registry[Any]:
        registries: dict[str, Registry[Any]] = {
            "probe": self.probes,
            "sampler": self.samplers,
            "contract": self.contracts,
            "cleanup": self.cleanups,
            "load": self.loads,
            "lock": self.locks,
        }
        return registries[capability]


STAGE_TYPES = StageTypes(BUILTIN_STAGE_TYPES)
PROBES = STAGE_TYPES.probes
SAMPLERS = STAGE_TYPES.samplers

INJECTORS: Registry[Injector] = Registry(
    "injector",
    "pipeline_check.injectors",
    {
        "websocket": "pipeline_check.backends.websocket.injector:WebSocketInjector",
        "kafka": "pipeline_check.backends.kafka.injector:KafkaInjector",
    },
)
