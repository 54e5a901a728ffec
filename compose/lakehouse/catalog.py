"""The lakehouse's Iceberg REST catalog: Apache Iceberg's RESTCatalogServer (the iceberg-open-api test
fixture) over a JDBC catalog in a SQLite file, writing the warehouse to S3 with S3FileIO.

Run from compose/: ``python -m lakehouse.catalog`` checks its settings, creates the SQLite file's
folder and execs java, so the service's pid is the JVM's. Env:

- REST_CATALOG_PORT: the REST API's port (required); :func:`health_url` answers 200 once it serves
- REST_CATALOG_DB: the SQLite file holding the catalog (required); tables survive a restart
- LAKEHOUSE_WAREHOUSE: s3://BUCKET[/PREFIX] (required)
- S3_ENDPOINT: http://HOST:PORT of the S3 API (required)
- S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_REGION: default to the profile's (lakehouse/__init__.py)
- LAKEHOUSE_LIBS: the jars `make setup` fetched (default: compose/lakehouse/libs)

The server reads its catalog properties from CATALOG_* variables (see :func:`property_env`). It
listens on every interface (it takes a port, not a host), with SO_REUSEPORT: a second server on a
busy port would share it silently, so the launcher refuses a port something already listens on.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from services.common import EXIT_CONFIG, ConfigError, ServiceError, env_port, env_str, load_config, setup_logging

from . import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

log = logging.getLogger("catalog")

LIBS = Path(__file__).resolve().parent / "libs"
MAIN_CLASS = "org.apache.iceberg.rest.RESTCatalogServer"
ENV_PREFIX = "CATALOG_"
JVM_OPTIONS = (
    # a small heap, a single-threaded collector and the client compiler only: the machine's cores are
    # shared with the pipeline, and C1 alone starts the server in about half the time (measured on a
    # loaded 2-core machine: 4.7-5.0 s against 6.4-10.2 s) while a few commits a second need no C2
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.logFile=System.out",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
    # it logs every catalog property at INFO, the S3 secret key included
    "-Dorg.slf4j.simpleLogger.log.org.apache.iceberg.rest.RESTCatalogServer=warn",
)

_WAREHOUSE_RE = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[^/].*)?$")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where the warehouse's S3 API is and how to sign for it."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        endpoint = env_str("S3_ENDPOINT", env=env)
        url = urlparse(endpoint)
        if url.scheme not in {"http", "https"} or not url.hostname or url.path not in {"", "/"}:
            raise ConfigError(f"S3_ENDPOINT={endpoint!r} (env): must be http://HOST:PORT, e.g. http://127.0.0.1:19000")
        return cls(
            endpoint=endpoint.rstrip("/"),
            access_key_id=env_str("S3_ACCESS_KEY_ID", ACCESS_KEY_ID, env),
            secret_access_key=env_str("S3_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY, env),
            region=env_str("S3_REGION", REGION, env),
        )


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    port: int
    db: Path
    warehouse: str
    s3: S3Settings
    libs: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CatalogConfig:
        port = env_port("REST_CATALOG_PORT", env=env)
        db = env_str("REST_CATALOG_DB", env=env)
        if ":" in db:
            raise ConfigError(f"REST_CATALOG_DB={db!r} (env): must be a file path, e.g. /data/catalog.db, not a URI")
        raw_warehouse = env_str("LAKEHOUSE_WAREHOUSE", env=env)
        warehouse = raw_warehouse.rstrip("/")
        if not _WAREHOUSE_RE.match(warehouse):
            raise ConfigError(
                f"LAKEHOUSE_WAREHOUSE={raw_warehouse!r} (env): must be s3://BUCKET[/PREFIX], "
                "e.g. s3://lakehouse/warehouse"
            )
        libs = Path(env_str("LAKEHOUSE_LIBS", str(LIBS), env))
        if not any(libs.glob("*.jar")):
            raise ConfigError(f"LAKEHOUSE_LIBS={str(libs)!r} (env): no jars there; run `make setup` to fetch them")
        return cls(port, Path(db).resolve(), warehouse, S3Settings.from_env(env), libs)


def health_url(port: int, host: str = "127.0.0.1") -> str:
    """The REST catalog's configuration endpoint: 200 with JSON once the server takes requests."""
    return f"http://{host}:{port}/v1/config"


def server_properties(cfg: CatalogConfig) -> dict[str, str]:
    """The catalog properties of the server and of the JDBC catalog behind it."""
    return {
        "rest.port": str(cfg.port),
        "uri": f"jdbc:sqlite:{cfg.db}",
        "warehouse": cfg.warehouse,
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "s3.endpoint": cfg.s3.endpoint,
        "s3.path-style-access": "true",  # the bucket goes in the path: no per-bucket host names locally
        "s3.access-key-id": cfg.s3.access_key_id,
        "s3.secret-access-key": cfg.s3.secret_access_key,
        "client.region": cfg.s3.region,
        "http-client.type": "urlconnection",  # the only SDK HTTP client on the classpath (pom.xml)
    }


def client_properties(uri: str, s3: S3Settings) -> dict[str, str]:
    """pyiceberg ``load_catalog`` properties for this catalog; data files go through pyarrow's S3 filesystem."""
    return {
        "type": "rest",
        "uri": uri,
        "s3.endpoint": s3.endpoint,
        "s3.access-key-id": s3.access_key_id,
        "s3.secret-access-key": s3.secret_access_key,
        # a given region also keeps pyarrow from asking AWS where the bucket lives
        "s3.region": s3.region,
        "s3.force-virtual-addressing": "false",
    }


def property_name(variable: str) -> str:
    """The catalog property RESTCatalogServer reads from a CATALOG_* variable (Iceberg's RCKUtils rule:
    drop the prefix, "__" -> "-", "_" -> ".", lower-case)."""
    return variable.removeprefix(ENV_PREFIX).replace("__", "-").replace("_", ".").lower()


def property_env(properties: Mapping[str, str]) -> dict[str, str]:
    """The CATALOG_* variables the server reads back as exactly ``properties``."""
    env: dict[str, str] = {}
    for key, value in properties.items():
        variable = ENV_PREFIX + key.replace("-", "__").replace(".", "_").upper()
        if property_name(variable) != key:
            raise ValueError(f"catalog property {key!r} has no CATALOG_* variable (it holds '_', '.-' or capitals)")
        env[variable] = value
    return env


def command(libs: Path, java: str = "java") -> list[str]:
    return [java, *JVM_OPTIONS, "-cp", f"{libs}/*", MAIN_CLASS]


def environment(cfg: CatalogConfig, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the server's properties; inherited CATALOG_* variables are dropped, since each
    would become a catalog property."""
    kept = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    return {**kept, **property_env(server_properties(cfg))}


def ensure_port_free(port: int) -> None:
    """Fail if anything listens on ``port`` (the server itself would share it, see the module doc)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no listener
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ServiceError(f"REST_CATALOG_PORT={port}: something already listens there; pick a free port") from None


def main() -> int:
    setup_logging("catalog")
    cfg = load_config(CatalogConfig.from_env)
    java = shutil.which("java")
    if java is None:
        log.error("java: not found on PATH; install a JDK 17 or newer")
        return EXIT_CONFIG
    try:
        ensure_port_free(cfg.port)
    except ServiceError as exc:
        log.error("%s", exc)
        return 1
    cfg.db.parent.mkdir(parents=True, exist_ok=True)
    argv = command(cfg.libs, java)
    log.info("REST catalog on port %d, warehouse %s, catalog %s: exec %s", cfg.port, cfg.warehouse, cfg.db, argv)
    os.execve(java, argv, environment(cfg, os.environ))


if __name__ == "__main__":
    sys.exit(main())
