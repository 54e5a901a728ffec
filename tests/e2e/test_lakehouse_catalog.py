"""The lakehouse profile's infrastructure, end to end: S3 (moto) and Apache Iceberg's REST catalog server,
started as processes the way a stack service entry starts them (``python -m lakehouse.s3`` and
``python -m lakehouse.catalog`` from compose/), driven with pyiceberg's REST catalog."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import httpx
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table

from pipeline_check.pytest_plugin import free_ports
from tests.e2e.helpers import wait_for

# compose/ is where the services run (`python -m lakehouse.X`); the test imports them the same way
COMPOSE = Path(__file__).resolve().parents[2] / "compose"
if str(COMPOSE) not in sys.path:
    sys.path.insert(0, str(COMPOSE))

from lakehouse import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, catalog, s3  # noqa: E402
from services.iceberg import TABLE_PROPERTIES, TRADES_ARROW_SCHEMA, TRADES_SCHEMA  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

START_TIMEOUT = 120.0  # a JVM start on a shared, loaded 2-core machine
STOP_TIMEOUT = 30.0
BUCKET = "lake-e2e"  # not the default bucket: proves S3_BUCKET reaches the server
WAREHOUSE = f"s3://{BUCKET}/warehouse"


@dataclass(slots=True)
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ready_s: float  # spawn to first healthy answer

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_module(module: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m module`` as the stack driver does: from compose/, its own process group."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=COMPOSE,
            env={**os.environ, "PYTHONPATH": str(COMPOSE), **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start(name: str, module: str, env: Mapping[str, str], health: str, logs: Path) -> Service:
    log = logs / f"{name}.log"
    began = time.monotonic()
    process = run_module(module, env, log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(health, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, START_TIMEOUT, f"{name} healthy at {health}")
    except BaseException:
        stop_process(process)
        raise
    return Service(name, process, log, time.monotonic() - began)


@dataclass(slots=True)
class Lakehouse:
    s3: Service
    catalog: Service
    s3_endpoint: str
    catalog_port: int
    catalog_env: dict[str, str]
    logs: Path

    @property
    def catalog_uri(self) -> str:
        return f"http://127.0.0.1:{self.catalog_port}"

    def client(self) -> Catalog:
        """A new pyiceberg REST catalog client (nothing cached from earlier calls)."""
        settings = catalog.S3Settings(self.s3_endpoint, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
        return load_catalog("lakehouse", **catalog.client_properties(self.catalog_uri, settings))

    def object_keys(self) -> set[str]:
        client = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        )
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    def restart_catalog(self) -> Service:
        self.catalog.stop()
        self.catalog = start_catalog(self.catalog_port, self.catalog_env, self.logs)
        return self.catalog


def start_catalog(port: int, env: Mapping[str, str], logs: Path) -> Service:
    return start("catalog", "lakehouse.catalog", env, catalog.health_url(port), logs)


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lakehouse]:
    """S3 and the REST catalog on free ports; both are stopped afterwards."""
    logs = tmp_path_factory.mktemp("lakehouse")
    ports = free_ports(["s3", "catalog"])
    s3_endpoint = f"http://127.0.0.1:{ports['s3']}"
    s3_env = {"S3_PORT": str(ports["s3"]), "S3_BUCKET": BUCKET}
    s3_service = start("s3", "lakehouse.s3", s3_env, s3.health_url(s3_endpoint, BUCKET), logs)
    try:
        env = {
            "REST_CATALOG_PORT": str(ports["catalog"]),
            "REST_CATALOG_DB": str(logs / "catalog" / "catalog.db"),
            "LAKEHOUSE_WAREHOUSE": WAREHOUSE,
            "S3_ENDPOINT": s3_endpoint,
        }
        house = Lakehouse(
            s3_service, start_catalog(ports["catalog"], env, logs), s3_endpoint, ports["catalog"], env, logs
        )
        try:
            yield house
        finally:
            house.catalog.stop()
    finally:
        s3_service.stop()


def trade_rows(first_id: int, count: int) -> list[dict[str, Any]]:
    """Rows of the reference table with every decimal digit and microsecond significant."""
    at = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    return [
        {
            "symbol": "BTCUSDT",
            "trade_id": first_id + i,
            "price": Decimal("65000.12345678") + i * Decimal("0.00000001"),
            "quantity": Decimal("9999999999.99999999") if i == 0 else Decimal("0.00000001") * (i + 1),
            "side": "sell" if i % 2 else "buy",
            "event_time": at + timedelta(microseconds=i),
            "trade_time": at + timedelta(milliseconds=i, microseconds=1),
            "ingest_time": at + timedelta(seconds=1, microseconds=i),
            "kafka_partition": i % 3,
            "kafka_offset": first_id + i,
        }
        for i in range(count)
    ]


def arrow(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TRADES_ARROW_SCHEMA)


def read_rows(table: Table, snapshot_id: int | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.scan(snapshot_id=snapshot_id).to_arrow().sort_by("trade_id").to_pylist()
    return rows


def s3_key(location: str) -> str:
    """The key of an s3:// location in the test's bucket."""
    url = urlparse(location)
    assert (url.scheme, url.netloc) == ("s3", BUCKET), location
    return url.path.lstrip("/")


def create_trades_table(client: Catalog) -> tuple[str, Table]:
    namespace = "lake_" + uuid.uuid4().hex[:10]  # tests isolate by namespace, not by restarts
    client.create_namespace(namespace)
    table = client.create_table(f"{namespace}.trades", schema=TRADES_SCHEMA, properties=TABLE_PROPERTIES)
    return namespace, table


def test_both_servers_become_ready(lakehouse: Lakehouse, record_property: Any) -> None:
    config = httpx.get(catalog.health_url(lakehouse.catalog_port), timeout=10)
    assert config.status_code == 200
    body = config.json()
    assert isinstance(body["defaults"], dict) and isinstance(body["overrides"], dict), body
    location = httpx.get(s3.health_url(lakehouse.s3_endpoint, BUCKET), timeout=10)
    assert location.status_code == 200 and "LocationConstraint" in location.text, location.text
    # a bucket the server was not asked for does not exist: the health URL tells the two apart
    assert httpx.get(s3.health_url(lakehouse.s3_endpoint, "lakehouse-other"), timeout=10).status_code == 404
    for service in (lakehouse.s3, lakehouse.catalog):
        record_property(f"{service.name}_ready_s", round(service.ready_s, 3))
        print(f"{service.name} ready after {service.ready_s:.2f}s")


def test_table_round_trip_on_s3(lakehouse: Lakehouse) -> None:
    namespace, table = create_trades_table(lakehouse.client())
    assert table.location() == f"{WAREHOUSE}/{namespace}/trades"
    first, second, replacement = trade_rows(1, 3), trade_rows(100, 2), trade_rows(1000, 4)

    table.append(arrow(first))
    table.append(arrow(second))
    assert read_rows(table) == first + second
    table.overwrite(arrow(replacement))

    # a new client sees exactly what the catalog committed: the rows, and every snapshot in order
    reloaded = lakehouse.client().load_table(f"{namespace}.trades")
    assert read_rows(reloaded) == replacement
    snapshots = reloaded.snapshots()
    operations = [s.summary.operation.value for s in snapshots if s.summary is not None]
    # pyiceberg's overwrite commits a delete of every file, then an append, in one transaction
    assert operations == ["append", "append", "delete", "append"], operations
    assert reloaded.current_snapshot() == snapshots[-1]
    # time travel: the first append's data files are still readable from S3
    assert read_rows(reloaded, snapshots[0].snapshot_id) == first
    assert read_rows(reloaded, snapshots[1].snapshot_id) == first + second

    # metadata, manifest lists and Parquet data files of every snapshot are objects in the bucket
    keys = lakehouse.object_keys()
    prefix = f"warehouse/{namespace}/trades/"
    data_files = {
        s3_key(task.file.file_path)
        for snap in snapshots
        for task in reloaded.scan(snapshot_id=snap.snapshot_id).plan_files()
    }
    assert data_files and all(k.startswith(prefix + "data/") and k.endswith(".parquet") for k in data_files), data_files
    assert data_files <= keys, sorted(data_files - keys)
    manifest_lists = {s3_key(s.manifest_list) for s in snapshots}
    assert manifest_lists <= keys, sorted(manifest_lists - keys)
    assert s3_key(reloaded.metadata_location) in keys


def test_catalog_restart_keeps_tables(lakehouse: Lakehouse, record_property: Any) -> None:
    namespace, table = create_trades_table(lakehouse.client())
    rows = trade_rows(5000, 5)
    table.append(arrow(rows))
    before = [s.snapshot_id for s in lakehouse.client().load_table(f"{namespace}.trades").snapshots()]

    stopped = lakehouse.catalog
    restarted = lakehouse.restart_catalog()
    assert stopped.process.returncode is not None
    record_property("catalog_restart_ready_s", round(restarted.ready_s, 3))

    reloaded = lakehouse.client().load_table(f"{namespace}.trades")
    assert [s.snapshot_id for s in reloaded.snapshots()] == before
    assert read_rows(reloaded) == rows
    # and it still commits: the S3 side of the catalog came back too
    reloaded.append(arrow(trade_rows(6000, 1)))
    assert len(read_rows(lakehouse.client().load_table(f"{namespace}.trades"))) == len(rows) + 1


def one_line_error(module: str, env: Mapping[str, str], tmp_path: Path) -> tuple[int, str]:
    """Run a launcher that must refuse to start; its exit code and its only output line."""
    log = tmp_path / f"{module}.log"
    process = run_module(module, env, log)
    try:
        code = process.wait(timeout=60)
    finally:
        stop_process(process)
    lines = log.read_text().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return code, lines[0]


def catalog_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Settings the catalog launcher accepts (nothing listens at the S3 endpoint: it never gets that far)."""
    env = {
        "REST_CATALOG_PORT": str(free_ports(["catalog"])["catalog"]),
        "REST_CATALOG_DB": str(tmp_path / "catalog" / "catalog.db"),
        "LAKEHOUSE_WAREHOUSE": WAREHOUSE,
        "S3_ENDPOINT": "http://127.0.0.1:9",
    }
    return {**env, **overrides}


@pytest.mark.parametrize(
    ("module", "overrides", "variable"),
    [
        ("lakehouse.catalog", {"LAKEHOUSE_WAREHOUSE": "file:///tmp/warehouse"}, "LAKEHOUSE_WAREHOUSE"),
        ("lakehouse.catalog", {"REST_CATALOG_PORT": "70000"}, "REST_CATALOG_PORT"),
        ("lakehouse.catalog", {"REST_CATALOG_DB": "jdbc:sqlite:/tmp/catalog.db"}, "REST_CATALOG_DB"),
        ("lakehouse.catalog", {"S3_ENDPOINT": "127.0.0.1:9000"}, "S3_ENDPOINT"),
        ("lakehouse.catalog", {"LAKEHOUSE_LIBS": "/nonexistent/libs"}, "LAKEHOUSE_LIBS"),
        ("lakehouse.s3", {"S3_PORT": ""}, "S3_PORT"),
        ("lakehouse.s3", {"S3_BUCKET": "Not_A_Bucket"}, "S3_BUCKET"),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(
    module: str, overrides: dict[str, str], variable: str, tmp_path: Path
) -> None:
    base = catalog_env(tmp_path) if module == "lakehouse.catalog" else {"S3_PORT": str(free_ports(["s3"])["s3"])}
    code, line = one_line_error(module, {**base, **overrides}, tmp_path)
    assert code == 2, line
    assert f"{variable}=" in line and "(env)" in line, line
    assert not (tmp_path / "catalog").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("module", "variable"), [("lakehouse.s3", "S3_PORT"), ("lakehouse.catalog", "REST_CATALOG_PORT")]
)
def test_busy_port_exits_1_naming_the_port(module: str, variable: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        env = catalog_env(tmp_path, REST_CATALOG_PORT=port) if module == "lakehouse.catalog" else {"S3_PORT": port}
        code, line = one_line_error(module, env, tmp_path)
    assert code == 1, line
    assert f"{variable}={port}" in line and "free port" in line, line
