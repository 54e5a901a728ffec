"""docker-compose.yml stays the same stack as stack.toml (and, with `--profile lakehouse` and lakehouse.env, as
profiles/lakehouse.toml): services, order, ports, variable names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline_check.stack.spec import StackSpec, load_stack

COMPOSE = Path(__file__).parents[2] / "compose"
# variables that only say where to listen: a container listens on 0.0.0.0, a local process on loopback
CONTAINER_ONLY = {"API_HOST", "HEALTH_HOST", "FEED_HOST", "S3_HOST", "REGISTRY_HOST"}
# services configured by their image's own variables, not the reference services' ones
OWN_IMAGE = {"kafka", "toxiproxy", "catalog"}
UNSET = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):-\}$")  # "${NAME:-}": empty unless an env file sets it


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return data["services"]


@pytest.fixture(scope="module")
def stack() -> StackSpec:
    return load_stack(COMPOSE / "stack.toml", run_dir=Path("/run"))


@pytest.fixture(scope="module")
def lakehouse() -> StackSpec:
    return load_stack(COMPOSE / "profiles" / "lakehouse.toml", run_dir=Path("/run"))


def profiled(compose: dict[str, Any], profile: str) -> list[str]:
    return [name for name, service in compose.items() if profile in service.get("profiles", ())]


def test_same_services_in_the_same_order(compose: dict[str, Any], stack: StackSpec, lakehouse: StackSpec) -> None:
    assert [name for name in compose if name not in profiled(compose, "lakehouse")] == list(stack.services)
    assert list(compose) == list(lakehouse.services)
    assert profiled(compose, "lakehouse") == [name for name in lakehouse.services if name not in stack.services]


def _depends(service: dict[str, Any], *, optional: bool) -> dict[str, Any]:
    return {name: d for name, d in service.get("depends_on", {}).items() if optional or d.get("required", True)}


def test_same_dependencies_with_health_conditions(
    compose: dict[str, Any], stack: StackSpec, lakehouse: StackSpec
) -> None:
    for spec, optional in ((stack, False), (lakehouse, True)):
        for name, service in spec.services.items():
            depends = _depends(compose[name], optional=optional)
            assert sorted(depends) == sorted(service.depends_on), (spec.name, name)
            assert all(d["condition"] == "service_healthy" for d in depends.values()), name
            assert "healthcheck" in compose[name], f"{name} has no healthcheck"


def test_same_environment_names(compose: dict[str, Any], stack: StackSpec, lakehouse: StackSpec) -> None:
    for name, service in lakehouse.services.items():
        if name in OWN_IMAGE:
            continue
        environment = compose[name].get("environment", {})
        assert set(environment) - CONTAINER_ONLY == set(service.env), name
        if name in stack.services:  # without the env file, the lakehouse-only ones are empty: unset
            unset = {k for k, v in environment.items() if UNSET.match(str(v))}
            assert set(environment) - CONTAINER_ONLY - unset == set(stack.services[name].env), name


def test_the_env_file_switches_what_the_profile_changes(compose: dict[str, Any], lakehouse: StackSpec) -> None:
    settings = dict(line.split("=", 1) for line in (COMPOSE / "lakehouse.env").read_text().splitlines() if "=" in line)
    interpolated = {
        m.group(1)
        for service in compose.values()
        for value in service.get("environment", {}).values()
        for m in re.finditer(r"\$\{([A-Z0-9_]+):-", str(value))
    } - {"PC_DATA_DIR"}
    assert set(settings) == interpolated
    profile = lakehouse.services["consumer"].env | lakehouse.services["api"].env
    for variable, value in settings.items():  # the same values, host names aside
        local = re.sub(r"//127\.0\.0\.1:", "//", profile[variable])
        container = re.sub(r"//[a-z0-9]+:", "//", value)
        assert local == container, variable


def test_same_published_ports(compose: dict[str, Any], lakehouse: StackSpec) -> None:
    published = {name: {int(p.split(":")[0]) for p in service.get("ports", [])} for name, service in compose.items()}
    for port_name, port in lakehouse.ports.items():
        owner = port_name.split("_")[0]
        assert port in published[owner], f"{port_name}={port} not published by {owner}"
        assert all(int(p.split(":")[0]) == int(p.split(":")[1]) for p in compose[owner]["ports"]), owner


def test_python_services_share_one_image(compose: dict[str, Any], lakehouse: StackSpec) -> None:
    builds = {name: compose[name]["build"]["dockerfile"] for name in lakehouse.services if name not in OWN_IMAGE}
    assert set(builds.values()) == {"compose/Dockerfile"}
    assert compose["kafka"]["image"].startswith("apache/kafka:4.1")
    assert compose["toxiproxy"]["image"] == "ghcr.io/shopify/toxiproxy:2.12.0"  # the version make setup builds
    # the REST catalog image is the server compose/lakehouse runs from jars, at the version pom.xml pins
    version = re.search(r"<iceberg.version>([^<]+)<", (COMPOSE / "lakehouse" / "pom.xml").read_text())
    assert version is not None
    assert compose["catalog"]["image"] == f"apache/iceberg-rest-fixture:{version.group(1)}"


def test_same_proxies(stack: StackSpec) -> None:
    proxies = json.loads((COMPOSE / "toxiproxy" / "compose-proxies.json").read_text())
    assert [p["name"] for p in proxies] == list(stack.proxies)
    assert [int(p["listen"].rsplit(":", 1)[1]) for p in proxies] == [
        int(listen.rsplit(":", 1)[1]) for listen, _ in stack.proxies.values()
    ]
