"""docker-compose.yml stays the same stack as stack.toml: services, order, ports, variable names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline_check.stack.spec import load_stack

COMPOSE = Path(__file__).parents[2] / "compose"
# variables that only say where to listen: a container listens on 0.0.0.0, a local process on loopback
CONTAINER_ONLY = {"API_HOST", "HEALTH_HOST", "FEED_HOST"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return data["services"]


@pytest.fixture(scope="module")
def stack() -> Any:
    return load_stack(COMPOSE / "stack.toml", run_dir=Path("/run"))


def test_same_services_in_the_same_order(compose: dict[str, Any], stack: Any) -> None:
    assert list(compose) == list(stack.services)


def test_same_dependencies_with_health_conditions(compose: dict[str, Any], stack: Any) -> None:
    for name, service in stack.services.items():
        depends = compose[name].get("depends_on", {})
        assert sorted(depends) == sorted(service.depends_on), name
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name
        assert "healthcheck" in compose[name], f"{name} has no healthcheck"


def test_same_environment_names(compose: dict[str, Any], stack: Any) -> None:
    for name, service in stack.services.items():
        if name in ("kafka", "toxiproxy"):
            continue  # configured by their images' own variables and flags
        in_compose = set(compose[name].get("environment", {})) - CONTAINER_ONLY
        assert in_compose == set(service.env), name


def test_same_published_ports(compose: dict[str, Any], stack: Any) -> None:
    published = {name: {int(p.split(":")[0]) for p in service.get("ports", [])} for name, service in compose.items()}
    for port_name, port in stack.ports.items():
        owner = port_name.split("_")[0]
        assert port in published[owner], f"{port_name}={port} not published by {owner}"
        assert all(int(p.split(":")[0]) == int(p.split(":")[1]) for p in compose[owner]["ports"]), owner


def test_python_services_share_one_image(compose: dict[str, Any], stack: Any) -> None:
    builds = {
        name: compose[name]["build"]["dockerfile"] for name in stack.services if name not in ("kafka", "toxiproxy")
    }
    assert set(builds.values()) == {"compose/Dockerfile"}
    assert compose["kafka"]["image"].startswith("apache/kafka:4.1")
    assert compose["toxiproxy"]["image"] == "ghcr.io/shopify/toxiproxy:2.12.0"  # the version make setup builds


def test_same_proxies(stack: Any) -> None:
    import json

    proxies = json.loads((COMPOSE / "toxiproxy" / "compose-proxies.json").read_text())
    assert [p["name"] for p in proxies] == list(stack.proxies)
    assert [int(p["listen"].rsplit(":", 1)[1]) for p in proxies] == [
        int(listen.rsplit(":", 1)[1]) for listen, _ in stack.proxies.values()
    ]
