"""The lakehouse catalog launcher's pure parts: settings, CATALOG_* variables, the java command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lakehouse import catalog
from services.common import ConfigError


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "iceberg-core.jar").touch()
    return {
        "REST_CATALOG_PORT": "18181",
        "REST_CATALOG_DB": str(tmp_path / "catalog.db"),
        "LAKEHOUSE_WAREHOUSE": "s3://lakehouse/warehouse/",
        "S3_ENDPOINT": "http://127.0.0.1:19000/",
        "LAKEHOUSE_LIBS": str(libs),
    }


def test_settings_from_env(env: dict[str, str], tmp_path: Path) -> None:
    cfg = catalog.CatalogConfig.from_env(env)
    assert (cfg.port, cfg.db, cfg.warehouse) == (18181, tmp_path / "catalog.db", "s3://lakehouse/warehouse")
    assert cfg.s3 == catalog.S3Settings("http://127.0.0.1:19000", "lakehouse", "lakehouse-secret", "us-east-1")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LAKEHOUSE_WAREHOUSE", "file:///data/warehouse"),
        ("LAKEHOUSE_WAREHOUSE", "s3://"),
        ("LAKEHOUSE_WAREHOUSE", "s3://Upper_Case/warehouse"),
        ("REST_CATALOG_DB", "sqlite:///data/catalog.db"),
        ("S3_ENDPOINT", "127.0.0.1:19000"),
        ("S3_ENDPOINT", "http://127.0.0.1:19000/bucket"),
        ("REST_CATALOG_PORT", "0"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable}='?{re.escape(value)}'? \(env\): "):
        catalog.CatalogConfig.from_env({**env, variable: value})


def test_libs_without_jars_say_how_to_fetch_them(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"LAKEHOUSE_LIBS=.*no jars there; run `make setup`"):
        catalog.CatalogConfig.from_env({**env, "LAKEHOUSE_LIBS": str(tmp_path / "empty")})


def test_properties_travel_as_the_variables_iceberg_reads(env: dict[str, str]) -> None:
    properties = catalog.server_properties(catalog.CatalogConfig.from_env(env))
    variables = catalog.property_env(properties)
    assert {catalog.property_name(v): value for v, value in variables.items()} == properties
    assert variables["CATALOG_REST_PORT"] == "18181"
    assert variables["CATALOG_URI"].startswith("jdbc:sqlite:/")
    assert variables["CATALOG_WAREHOUSE"] == "s3://lakehouse/warehouse"
    assert variables["CATALOG_IO__IMPL"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert variables["CATALOG_S3_PATH__STYLE__ACCESS"] == "true"


@pytest.mark.parametrize("key", ["jdbc.schema_version", "a.-b", "Upper.case"])
def test_a_property_without_a_variable_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="has no CATALOG_"):
        catalog.property_env({key: "x"})


def test_inherited_catalog_variables_are_dropped(env: dict[str, str]) -> None:
    cfg = catalog.CatalogConfig.from_env(env)
    result = catalog.environment(cfg, {"PATH": "/usr/bin", "CATALOG_CATALOG__IMPL": "x", "CATALOG_S3_ENDPOINT": "y"})
    assert result["PATH"] == "/usr/bin"
    assert "CATALOG_CATALOG__IMPL" not in result
    assert result["CATALOG_S3_ENDPOINT"] == "http://127.0.0.1:19000"


def test_command_runs_the_server_on_the_fetched_jars(tmp_path: Path) -> None:
    argv = catalog.command(tmp_path, "/usr/bin/java")
    assert argv[0] == "/usr/bin/java" and argv[-1] == "org.apache.iceberg.rest.RESTCatalogServer"
    assert argv[argv.index("-cp") + 1] == f"{tmp_path}/*"
