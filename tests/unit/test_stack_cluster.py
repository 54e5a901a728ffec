"""The cluster profile as declared (compose/profiles/cluster.toml): three KRaft nodes of one quorum, each with
its own Toxiproxy links, replicated topics, Trogdor's platform; prepare steps with templates and vars; the
ports each service shows; the services' topic settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from services.common import ConfigError
from services.kafka_util import TopicSettings

from pipeline_check.errors import ConfigError as StackConfigError
from pipeline_check.errors import StackError
from pipeline_check.stack.prepare import kafka_properties, trogdor_platform
from pipeline_check.stack.spec import StackSpec, load_stack, profile_file

COMPOSE = Path(__file__).parents[2] / "compose"
NODES = ("kafka", "kafka2", "kafka3")


@pytest.fixture(scope="module")
def cluster() -> StackSpec:
    return load_stack(profile_file("cluster", COMPOSE / "stack.toml"))


def properties(spec: StackSpec, node: str) -> dict[str, str]:
    folder, text = kafka_properties(spec, spec.services[node])
    assert folder == spec.run_dir / node
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_three_nodes_start_as_one_quorum_before_the_services(cluster: StackSpec) -> None:
    assert cluster.run_dir == (COMPOSE.parent / ".stack" / "cluster").resolve()
    assert cluster.home == (COMPOSE.parent / ".stack").resolve()  # shared with the other profiles
    assert cluster.profile == "cluster"
    order = cluster.start_order()
    assert order[:4] == [*NODES, "toxiproxy"]
    assert {cluster.services[n].group for n in NODES} == {"kafka"}
    assert order.index("consumer") > order.index("toxiproxy") and order.index("ingestor") > order.index("toxiproxy")
    assert set(cluster.services["toxiproxy"].depends_on) == set(NODES)


def test_each_node_renders_its_own_properties(cluster: StackSpec) -> None:
    nodes = {node: properties(cluster, node) for node in NODES}
    voters = {p["controller.quorum.voters"] for p in nodes.values()}
    assert len(voters) == 1  # one quorum
    assert voters.pop() == ",".join(
        f"{i}@127.0.0.1:{cluster.ports[f'{n}_controller']}" for i, n in enumerate(NODES, start=1)
    )
    assert [p["node.id"] for p in nodes.values()] == ["1", "2", "3"]
    for node, p in nodes.items():
        assert p["process.roles"] == "broker,controller"
        assert f"PLAINTEXT://127.0.0.1:{cluster.ports[node]}" in p["listeners"]
        assert f"CONTROLLER://127.0.0.1:{cluster.ports[f'{node}_controller']}" in p["listeners"]
        assert p["log.dirs"] == str(cluster.run_dir / node / "data")
        assert p["offsets.topic.replication.factor"] == "3" and p["transaction.state.log.min.isr"] == "2"
    ports = [port for p in nodes.values() for port in p["listeners"].split(",")]
    assert len(ports) == len(set(ports)) == 12


def test_each_client_stays_behind_its_proxy_on_every_node(cluster: StackSpec) -> None:
    for client, listener, suffixes in (("ingestor", "ingest", ("", "2", "3")), ("consumer", "consume", ("", "2", "3"))):
        proxies = [f"{client}-kafka{s}" for s in suffixes]
        bootstrap = cluster.services[client].env["KAFKA_BOOTSTRAP"].split(",")
        assert bootstrap == [cluster.proxies[p][0] for p in proxies]
        for node, proxy in zip(NODES, proxies, strict=True):
            listen, upstream = cluster.proxies[proxy]
            assert upstream == f"127.0.0.1:{cluster.ports[f'{node}_{listener}']}"
            advertised = properties(cluster, node)["advertised.listeners"]
            assert f"{listener.upper()}://{listen}" in advertised  # metadata hands out the proxy


def test_topics_are_replicated_and_the_validator_sees_the_cluster(cluster: StackSpec) -> None:
    for name in ("ingestor", "consumer"):
        env = cluster.services[name].env
        assert (env["TOPIC_REPLICATION_FACTOR"], env["TOPIC_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    nodes = ",".join(f"127.0.0.1:{cluster.ports[n]}" for n in NODES)
    assert cluster.exports["PC_KAFKA_BOOTSTRAP"] == nodes
    assert cluster.exports["PC_STACK_FILE"] == str(cluster.file)  # faults act on this profile's services
    assert cluster.exports["PC_TROGDOR_URL"] == f"http://127.0.0.1:{cluster.ports['trogdor_coordinator']}"
    assert cluster.trogdor is not None
    assert cluster.exports["PC_TROGDOR_AGENTS"].split(",") == list(cluster.trogdor.agents)
    default = load_stack(COMPOSE / "stack.toml")
    assert "TOPIC_REPLICATION_FACTOR" not in default.services["ingestor"].env  # the base is untouched
    assert default.exports["PC_STACK_FILE"] == str(COMPOSE / "stack.toml")


def test_trogdor_platform_file(cluster: StackSpec) -> None:
    assert cluster.trogdor is not None
    platform = trogdor_platform(cluster.trogdor)
    assert platform["platform"] == "org.apache.kafka.trogdor.basic.BasicPlatform"
    nodes = platform["nodes"]
    assert isinstance(nodes, dict)
    for name in ("agent1", "agent2"):
        assert nodes[name] == {"hostname": "127.0.0.1", "trogdor.agent.port": cluster.ports[f"trogdor_{name}"]}
        assert f"-n {name}" in " ".join(cluster.services[f"trogdor-{name}"].command)
    # no agent port: Trogdor would give the coordinator's node its default one (8888) and manage a phantom agent
    assert nodes["coordinator"] == {
        "hostname": "127.0.0.1",
        "trogdor.coordinator.port": cluster.ports["trogdor_coordinator"],
        "trogdor.agent.port": 0,
    }
    assert json.loads(json.dumps(platform)) == platform
    for name in ("trogdor-agent1", "trogdor-agent2", "trogdor-coordinator"):
        assert cluster.services[name].health_kind == "http"
    assert cluster.services["trogdor-coordinator"].health_target.endswith("/coordinator/status")


def test_ports_shown_per_service(cluster: StackSpec) -> None:
    assert list(cluster.ports_of("kafka2")) == ["kafka2", "kafka2_controller", "kafka2_ingest", "kafka2_consume"]
    assert list(cluster.ports_of("kafka")) == ["kafka", "kafka_controller", "kafka_ingest", "kafka_consume"]
    assert list(cluster.ports_of("trogdor-agent1")) == ["trogdor_agent1"]
    assert "toxiproxy_ingest3" in cluster.ports_of("toxiproxy")


def test_prepare_settings_are_checked(tmp_path: Path) -> None:
    base = """
[stack]
name = "s"
[ports]
a = 1
[services.a]
command = ["x"]
health = {{ tcp = "127.0.0.1:1" }}
{prepare}
"""
    path = tmp_path / "stack.toml"
    path.write_text(base.format(prepare='prepare = "kafka-craft"'))
    with pytest.raises(StackConfigError, match=r"services\.a\.prepare"):
        load_stack(path)
    path.write_text(base.format(prepare='prepare = { step = "kafka-kraft", template = "nope.properties" }'))
    with pytest.raises(StackConfigError, match=r"services\.a\.prepare\.template='nope\.properties'.*is not a file"):
        load_stack(path)
    (tmp_path / "node.properties").write_text("node.id={vars.id}\nport={vars.missing}\n")
    path.write_text(
        base.format(prepare='prepare = { step = "kafka-kraft", template = "node.properties", vars = { id = "7" } }')
    )
    spec = load_stack(path, run_dir=tmp_path / "run")
    with pytest.raises(StackError, match=r"node\.properties \(services\.a\.prepare\): has an unknown placeholder"):
        kafka_properties(spec, spec.services["a"])


def test_a_trogdor_agent_may_not_take_the_coordinators_name(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(
        '[stack]\nname = "s"\n[ports]\n[trogdor]\ncoordinator = "127.0.0.1:1"\n'
        'agents = { coordinator = "127.0.0.1:2" }\n[services.a]\ncommand = ["x"]\nhealth = { tcp = "127.0.0.1:1" }\n'
    )
    with pytest.raises(StackConfigError, match="may not be named 'coordinator'"):
        load_stack(path)


def test_topic_settings() -> None:
    assert TopicSettings.from_env({}) == TopicSettings(1, None)
    settings = TopicSettings.from_env({"TOPIC_REPLICATION_FACTOR": "3", "TOPIC_MIN_INSYNC_REPLICAS": "2"})
    topic = settings.new_topic("t", 3)
    assert (topic.replication_factor, topic.topic_configs) == (3, {"min.insync.replicas": "2"})
    assert TopicSettings.from_env({}).new_topic("t", 1).topic_configs == {}  # the broker's default
    with pytest.raises(ConfigError, match=r"TOPIC_MIN_INSYNC_REPLICAS='3' \(env\): must be at most"):
        TopicSettings.from_env({"TOPIC_REPLICATION_FACTOR": "2", "TOPIC_MIN_INSYNC_REPLICAS": "3"})
    with pytest.raises(ConfigError, match=r"TOPIC_REPLICATION_FACTOR='three'"):
        TopicSettings.from_env({"TOPIC_REPLICATION_FACTOR": "three"})
