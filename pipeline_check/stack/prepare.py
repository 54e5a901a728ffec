"""Steps a service needs before its first process starts, named by ``prepare =`` in stack.toml."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from pipeline_check.core.atomic_files import write_atomically
from pipeline_check.core.errors import StackError
from pipeline_check.stack.spec import ServiceSpec, StackSpec


def prepare_kafka_kraft(spec: StackSpec, service: ServiceSpec) -> None:
    """Render server.properties into the run folder and format KRaft storage once.

    The data directory survives restarts (the log is kept); only a missing ``meta.properties``
    triggers a format, with a cluster id remembered beside it.
    """
    libs = spec.kafka_libs
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(f"Kafka jars not found in {libs}; run `make setup` (fetches them with mvn)")
    java = shutil.which(service.command[0]) or shutil.which("java")
    if java is None:
        raise StackError("`java` is not on PATH; Kafka 4.x needs a Java 17+ runtime")
    kafka_dir = spec.run_dir / "kafka"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    template = (spec.compose_dir / "kafka" / "server.properties").read_text()
    properties = kafka_dir / "server.properties"
    properties.write_text(spec.render(f"services.{service.name}.prepare", template))

    data_dir = kafka_dir / "data"
    if (data_dir / "meta.properties").exists():
        return
    cluster_file = kafka_dir / "cluster.id"
    if not cluster_file.exists():
        # Kafka's Uuid text form: url-safe base64 of 16 random bytes, unpadded
        cluster_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())
    cmd = [
        java, "-cp", f"{libs}/*",
        f"-Dlog4j2.configurationFile={spec.compose_dir / 'kafka' / 'log4j2.properties'}",
        "kafka.tools.StorageTool", "format", "--ignore-formatted",
        "-t", cluster_file.read_text().strip(), "-c", str(properties),
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


PREPARERS: dict[str, Callable[[StackSpec, ServiceSpec], None]] = {
    "kafka-kraft": prepare_kafka_kraft,
    "toxiproxy": prepare_toxiproxy,
}
