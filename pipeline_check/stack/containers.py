"""The reference stack in containers (compose/docker-compose.yml) through testcontainers.

For users with a Docker engine: the same services, ports and environment names as stack.toml, so the
validator's settings are the stack's ``[exports]`` at their default ports.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline_check.errors import StackError
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
    """Build and start docker-compose.yml beside ``stack_file``; yield the exports; stop it after."""
    reason = docker_engine_error()
    if reason is not None:
        raise DockerUnavailable(f"--pc-stack containers needs a Docker engine and none answers ({reason})")
    from testcontainers.compose import DockerCompose

    spec = load_stack(Path(stack_file) if stack_file else default_stack_file())
    compose = DockerCompose(spec.compose_dir, compose_file_name="docker-compose.yml", build=True, wait=True)
    compose.start()
    try:
        exports = dict(spec.exports)
        # the services write the catalog inside their volume; the validator reads it through the API only
        yield exports
    finally:
        compose.stop()
