"""The reference stack in containers (compose/docker-compose.yml) through testcontainers.

For users with a Docker engine: the same services, ports and environment names as stack.toml, so the
validator's settings are the stack's ``[exports]`` at their default ports.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline_check.core.errors import StackError
from pipeline_check.stack.spec import default_stack_file, load_stack


class DockerUnavailable(StackError):
    """No Docker engine answers: the containers stack cannot run here."""


def docker_engine_error() -> str | None:
    """Why no Docker engine can be used, or None when one answers a ping."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:  # any failure to reach the engine means the same thing to the caller
        return f"{type(exc).__name__}: {exc}"
    return None


@contextmanager
def container_stack(stack_file: str | Path | None = None) -> Iterator[dict[str, str]]:
    """Build and start docker-compose.yml beside ``stack_file``; yield the exports; stop it after.

    The table's folder is a host temp dir mounted at the same path in the containers
    (``PC_DATA_DIR``), so the Iceberg probe on the host reads what the consumer wrote.
    """
    reason = docker_engine_error()
    if reason is not None:
        raise DockerUnavailable(f"--pc-stack containers needs a Docker engine and none answers ({reason})")
    from testcontainers.compose import DockerCompose

    spec = load_stack(Path(stack_file) if stack_file else default_stack_file())
    with tempfile.TemporaryDirectory(prefix="pipeline-check-data-") as data_dir:
        os.environ["PC_DATA_DIR"] = data_dir  # docker compose substitutes it in docker-compose.yml
        compose = DockerCompose(spec.compose_dir, compose_file_name="docker-compose.yml", build=True, wait=True)
        compose.start()
        try:
            yield {
                **spec.exports,
                "PC_FEED_HOST": "0.0.0.0",  # the ingestor dials from the container network
                "PC_ICEBERG_CATALOG_URI": f"sqlite:///{data_dir}/iceberg/catalog.db",
                "PC_ICEBERG_WAREHOUSE": f"file://{data_dir}/iceberg/warehouse",
            }
        finally:
            compose.stop()
            os.environ.pop("PC_DATA_DIR", None)
