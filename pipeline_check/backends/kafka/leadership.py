"""Who leads each partition of some topics, and which replicas are in sync: asked of a broker that answers
(:class:`~pipeline_check.backends.kafka.live_brokers.LiveBrokers`), so it reads right while brokers die.
Faults use it to find the broker a ``leader:TOPIC/P`` target names and to record leadership around a fault."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.metadata import MetadataRequest

from pipeline_check.backends.kafka.connect import reach
from pipeline_check.backends.kafka.live_brokers import FAILURES, LiveBrokers
from pipeline_check.core.errors import EndpointError
from pipeline_check.verdict.summary import PartitionState


class KafkaLeadership:
    """Leaders and ISRs of ``topics`` on the cluster at ``bootstrap`` (``setting`` names it in errors)."""

    def __init__(self, bootstrap: str, topics: Iterable[str], setting: str) -> None:
        self.bootstrap = bootstrap
        self.topics = sorted(set(topics))
        self.setting = setting
        self._admin: AIOKafkaAdminClient | None = None
        self._brokers: LiveBrokers | None = None

    async def partitions(self, held: Collection[int] = ()) -> dict[str, PartitionState]:
        """``"topic/partition"`` -> its leader and ISR now, asked of the brokers not ``held`` down first;
        ``EndpointError`` when no broker answers or a topic is unknown."""
        if self._brokers is None:
            self._admin = admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await reach(admin.start(), self.bootstrap, self.setting)
            self._brokers = LiveBrokers(admin._client)
        try:
            request = MetadataRequest(self.topics, allow_auto_topic_creation=False)
            response = await self._brokers.ask(request, last=held)
            return parse_metadata(response.to_object())
        except FAILURES as exc:
            what = f"Kafka metadata of {', '.join(self.topics)}: {type(exc).__name__}: {exc}"
            raise EndpointError(
                self.setting, self.bootstrap, what, "is a broker of the cluster up, and the topic there?"
            ) from None

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = self._brokers = None


def parse_metadata(answer: dict[str, object]) -> dict[str, PartitionState]:
    """A Metadata response (``to_object()``) as ``"topic/partition"`` -> ``PartitionState``, sorted."""
    states: dict[str, PartitionState] = {}
    for topic in answer["topics"]:  # type: ignore[attr-defined]
        if topic["error_code"]:
            raise for_code(topic["error_code"])(f"metadata of topic {topic['topic']!r}")
        for p in topic["partitions"]:
            states[f"{topic['topic']}/{p['partition']}"] = PartitionState(
                leader=p["leader"], isr=tuple(sorted(p["isr"])), replicas=tuple(p["replicas"])
            )
    return dict(sorted(states.items(), key=lambda kv: (kv[0].rsplit("/", 1)[0], int(kv[0].rsplit("/", 1)[1]))))
