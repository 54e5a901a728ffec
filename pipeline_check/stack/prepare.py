"""Steps a service needs before its first process starts, named by ``prepare =`` in stack.toml."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from pipeline_check.core.atomic_files import write_atomically
from pipeline_check.core.errors import ConfigError, StackError
from pipeline_check.stack.spec import COORDINATOR_NODE, PrepareSpec, PrepareStep, ServiceSpec, StackSpec, TrogdorSpec


def _java(service: ServiceSpec) -> str:
    """The Java runtime the service's command names, else the one on PATH."""
    java = shutil.which(service.command[0]) or shutil.which("java")
    if java is None:
        raise StackError("`java` is not on PATH; Kafka 4.x needs a Java 17+ runtime")
    return java


def _kafka_libs(spec: StackSpec, jar: str) -> Path:
    libs = spec.kafka_libs
    if not any(libs.glob(f"{jar}-*.jar")):
        raise StackError(f"{jar} jars not found in {libs}; run `make setup` (fetches them with mvn)")
    return libs


def kafka_properties(spec: StackSpec, service: ServiceSpec) -> tuple[Path, str]:
    """The node's folder and its server.properties: ``template`` (default kafka/server.properties) with the
    stack's placeholders, ``{folder}`` and ``{vars.NAME}`` filled in; the folder defaults to {run_dir}/kafka."""
    step = service.prepare or PrepareSpec("kafka-kraft")
    folder = step.folder or spec.run_dir / "kafka"
    template = spec.compose_dir / (step.template or "kafka/server.properties")
    try:
        return folder, spec.render("", template.read_text(), folder=folder, vars=SimpleNamespace(**step.vars))
    except ConfigError as exc:  # name the template, not its whole text
        raise StackError(f"{template} (services.{service.name}.prepare): {exc.problem}; fix the template") from None


def node_ids(spec: StackSpec) -> dict[int, str]:
    """Kafka node id -> the service that runs that node (its ``node.id`` in its rendered properties)."""
    nodes: dict[int, str] = {}
    for name in spec.kafka_nodes:
        _, rendered = kafka_properties(spec, spec.services[name])
        ids = [line.split("=", 1)[1].strip() for line in rendered.splitlines() if line.startswith("node.id=")]
        if len(ids) != 1 or not ids[0].isdigit():
            raise StackError(f"services.{name}: its server.properties sets no single numeric node.id ({ids})")
        nodes[int(ids[0])] = name
    return nodes


def prepare_kafka_kraft(spec: StackSpec, service: ServiceSpec) -> None:
    """Write the node's server.properties (``kafka_properties``) and format its KRaft storage (``folder``/data)
    once.

    The data directory survives restarts (the log is kept); only a missing ``meta.properties``
    triggers a format, with the cluster id the run folder keeps (every node of the cluster shares it).
    """
    libs = _kafka_libs(spec, "kafka_2.13")
    java = _java(service)
    kafka_dir, rendered = kafka_properties(spec, service)
    kafka_dir.mkdir(parents=True, exist_ok=True)
    properties = kafka_dir / "server.properties"
    properties.write_text(rendered)

    data_dir = kafka_dir / "data"
    if (data_dir / "meta.properties").exists():
        return
    cluster_file = spec.run_dir / "kafka" / "cluster.id"
    cluster_file.parent.mkdir(parents=True, exist_ok=True)
    if not cluster_file.exists():
        # Kafka's Uuid text form: url-safe base64 of 16 random bytes, unpadded
        cluster_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())
    cmd = [
        java, "-cp", f"{libs}/*",
        f"-Dlog4j2.configurationFile={spec.compose_dir / 'kafka' / 'log4j2.properties'}",
        "kafka.tools.StorageTool", "format", "--ignore-formatted",
        f"--cluster-id={cluster_file.read_text().strip()}", "-c", str(properties),  # an id may start with "-"
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise StackError(f"formatting Kafka storage in {data_dir} failed:\n{done.stdout}{done.stderr}")


def prepare_toxiproxy(spec: StackSpec, service: ServiceSpec) -> None:
    """Write the stack's ``[proxies]`` as the proxies file Toxiproxy's server creates at start
    (``-config``), so every link exists, healthy, before the services that go through it start."""
    binary = Path(service.command[0])
    if not binary.is_file():
        raise StackError(f"Toxiproxy's server not found at {binary}; run `make setup` (builds it with go install)")
    proxies = [
        {"name": n, "listen": listen, "upstream": up, "enabled": True} for n, (listen, up) in spec.proxies.items()
    ]
    write_atomically(spec.run_dir / "toxiproxy" / "proxies.json", json.dumps(proxies, indent=2))


def prepare_trogdor(spec: StackSpec, service: ServiceSpec) -> None:
    """Write the stack's ``[trogdor]`` as Trogdor's platform file, ``{run_dir}/trogdor/platform.json``, which
    the coordinator and every agent read (``-c``) and find their own node in (``-n``)."""
    _kafka_libs(spec, "trogdor")
    _java(service)
    if spec.trogdor is None:
        raise StackError(f"services.{service.name}.prepare is trogdor, but the stack has no [trogdor] table")
    write_atomically(spec.run_dir / "trogdor" / "platform.json", json.dumps(trogdor_platform(spec.trogdor), indent=2))


def trogdor_platform(trogdor: TrogdorSpec) -> dict[str, object]:
    """Trogdor's BasicPlatform file: one node per agent (``trogdor.agent.port``) and the coordinator's.

    A node without an agent port gets Trogdor's default (8888) and the coordinator would manage a phantom
    agent there: the coordinator's node says 0 (no agent)."""

    def node(address: str, port_key: str) -> dict[str, object]:
        host, _, port = address.rpartition(":")
        return {"hostname": host, port_key: int(port)}

    nodes = {name: node(address, "trogdor.agent.port") for name, address in trogdor.agents.items()}
    nodes[COORDINATOR_NODE] = {**node(trogdor.coordinator, "trogdor.coordinator.port"), "trogdor.agent.port": 0}
    return {"platform": "org.apache.kafka.trogdor.basic.BasicPlatform", "nodes": nodes}


PREPARERS: dict[PrepareStep, Callable[[StackSpec, ServiceSpec], None]] = {
    "kafka-kraft": prepare_kafka_kraft,
    "toxiproxy": prepare_toxiproxy,
    "trogdor": prepare_trogdor,
}
