"""Query API: FastAPI over the Iceberg table, DuckDB for ordering and limiting.

Per request: the table as the catalog has it now and its current snapshot's data files (both cached
until the next commit, see table_cache.py), pruned by their min/max stats on symbol and the trade_time
range, then DuckDB reads just those Parquet files, filters, orders (trade_time desc, trade_id desc) and
limits. Decimals leave DuckDB as text with the column's 8-digit scale, so they are never floats.

Access and id format (api_access.py, off by default): API_KEYS, API_KEY_HEADER, API_RATE_LIMIT, API_ID_FORMAT.
Time form (api_time.py): API_TIME_FORMAT=ms (default) | s | float_s | us | ns | iso | iso_naive, both for the
time fields of answers and for the start_time / end_time parameters.

Deliberate faults (faults.py), off by default and logged at WARNING on start:
  UNSAFE_API_OLDEST_FIRST=1        pages are ordered oldest first (trade_time, trade_id ascending)
  UNSAFE_API_PAGE_CAP=100          every page holds at most 100 rows whatever ``limit`` asks; meta.limit
                                   still echoes the request, so the cut is silent
  UNSAFE_API_PRICE_ORDER=1         pages are ordered by price, highest first (with PAGE_CAP: an answer that
                                   cannot be paged by time)
  UNSAFE_API_IGNORE_END_TIME=1     end_time is accepted and echoed but not applied: answers hold everything
                                   from start_time on (newest first, up to ``limit``)
  UNSAFE_API_RETRACT_FRACTION=0.2  such a share of trades (a keyed hash of the trade id) is no longer returned
                                   UNSAFE_API_RETRACT_AFTER_MS (default 2000) after the API first returned
                                   it; the table keeps it. Remembered in memory: a restart returns it again
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import duckdb
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.table import Table

from .api_access import ApiAccess, IdFormat
from .api_time import TimeError, TimeFormat
from .common import (
    CommonConfig,
    HttpTask,
    Shutdown,
    describe,
    env_port,
    env_str,
    load_config,
    run_main,
    setup_logging,
)
from .faults import ApiFaults, Retractions
from .iceberg import open_catalog
from .table_cache import TableCache

log = logging.getLogger("api")

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 500
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")

PARAM_HINTS = {
    "symbol": "required, 2-20 letters or digits, e.g. BTCUSDT",
    "limit": f"must be an integer between 1 and {MAX_LIMIT}",
}


def columns(form: TimeFormat) -> str:
    """The answer's columns; times in the API's form."""
    names = ("event_time", "trade_time", "ingest_time")
    times = ",".join(f"\n    {form.sql(f'src.{name}')} AS {name}" for name in names)
    return f"""
    symbol,
    trade_id,
    CAST(price AS VARCHAR) AS price,
    CAST(quantity AS VARCHAR) AS quantity,
    side,{times}
"""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    common: CommonConfig
    host: str
    port: int
    faults: ApiFaults
    access: ApiAccess = field(default_factory=ApiAccess)
    id_format: IdFormat | None = None
    time_format: TimeFormat = field(default_factory=TimeFormat)

    @classmethod
    def from_env(cls) -> ApiConfig:
        return cls(
            common=CommonConfig.from_env(),
            host=env_str("API_HOST", "127.0.0.1"),
            port=env_port("API_PORT"),
            faults=ApiFaults.from_env(MAX_LIMIT),
            access=ApiAccess.from_env(),
            id_format=IdFormat.from_env(),
            time_format=TimeFormat.from_env(),
        )


class BadRequest(Exception):
    """A parameter problem found after FastAPI's own parsing (400)."""


class BadParameter(Exception):
    """A parameter FastAPI passes as text but the API cannot read (422, as FastAPI's own)."""


class TableReader:
    """Opens the catalog lazily (the consumer creates it) and reads the table per request."""

    def __init__(self, cfg: CommonConfig, faults: ApiFaults, time_format: TimeFormat) -> None:
        self.cfg = cfg
        self.faults = faults
        self.columns = columns(time_format)
        self.cache = TableCache(lambda: open_catalog(cfg, writer=False), cfg.iceberg_table)
        # one DuckDB database; each request takes a cursor of its own (connect() costs ~35 ms, a cursor ~0.2)
        self._duckdb = duckdb.connect()
        self._duckdb.execute("SET GLOBAL TimeZone = 'UTC'")
        self._lock = threading.Lock()

    def load(self) -> Table:
        return self.cache.table()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._duckdb.cursor()

    def trades(
        self, symbol: str, start_us: int | None, end_us: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` rows of ``symbol`` with trade_time in [start_us, end_us) (epoch µs)."""
        table = self.load()
        snapshot = table.current_snapshot()
        if snapshot is None:
            return [], None
        row_filter: BooleanExpression = EqualTo("symbol", symbol)  # type: ignore[call-arg,arg-type]
        if start_us is not None:
            row_filter = And(row_filter, GreaterThanOrEqual("trade_time", start_us))  # type: ignore[call-arg,arg-type]
        if end_us is not None:
            row_filter = And(row_filter, LessThan("trade_time", end_us))  # type: ignore[call-arg,arg-type]
        plan = self.cache.plan(table, snapshot)
        if plan.files is None:
            tasks = list(table.scan(row_filter=row_filter, snapshot_id=snapshot.snapshot_id).plan_files())
        else:
            tasks = plan.tasks(symbol, start_us, end_us)
        where = ["symbol = $symbol"]
        params: dict[str, Any] = {"symbol": symbol, "limit": limit}
        if start_us is not None:
            where.append("trade_time >= make_timestamptz($start_us)")
            params["start_us"] = start_us
        if end_us is not None:
            where.append("trade_time < make_timestamptz($end_us)")
            params["end_us"] = end_us
        query_tail = f"WHERE {' AND '.join(where)} {self.faults.order_by()} LIMIT $limit"
        con = self._cursor()
        try:
            paths = [_local_file(t.file.file_path) for t in tasks]
            if not tasks:
                return [], snapshot.snapshot_id
            if all(p is not None for p in paths) and not any(t.delete_files for t in tasks):
                # fast path: DuckDB reads only the pruned files, with projection and top-N pushdown
                params["files"] = paths
                sql = f"SELECT {self.columns} FROM read_parquet($files) AS src {query_tail}"
            else:
                # object stores or delete files: let pyiceberg materialise the (filtered) rows
                con.register("trades", ArrowScan(table.metadata, table.io, table.schema(), row_filter).to_table(tasks))
                sql = f"SELECT {self.columns} FROM trades AS src {query_tail}"
            cursor = con.execute(sql, params)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        finally:
            con.close()
        return rows, snapshot.snapshot_id


def _local_file(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme == "":
        return uri
    return None


def _unavailable(cfg: CommonConfig, exc: BaseException) -> str:
    if isinstance(exc, NoSuchTableError):
        return f"table {cfg.iceberg_table} does not exist yet (the consumer creates it on first start)"
    if "no such table: iceberg_tables" in str(exc):
        return f"catalog {cfg.iceberg_catalog_uri} is not initialised yet (the consumer creates it)"
    return f"table {cfg.iceberg_table} unavailable: {describe(exc)}"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(cfg: ApiConfig) -> FastAPI:
    reader = TableReader(cfg.common, cfg.faults, cfg.time_format)
    retractions = Retractions.of(cfg.faults)
    app = FastAPI(title="market-data query API", docs_url=None, redoc_url=None, openapi_url=None)
    if cfg.access.keys or cfg.access.rate_limit:
        app.middleware("http")(cfg.access.middleware())

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ())]
            where = loc[0] if loc else "request"
            name = loc[-1] if len(loc) > 1 else where
            value = err.get("input")
            shown = "<missing>" if err.get("type") == "missing" else value
            hint = PARAM_HINTS.get(name, err.get("msg", "invalid"))
            parts.append(f"{name}={shown} ({where}): {hint}")
        return _error(422, "; ".join(parts))

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(BadParameter)
    async def bad_parameter(_: Request, exc: BadParameter) -> JSONResponse:
        return _error(422, str(exc))

    def query_time(name: str, raw: str | None) -> int | None:
        """A start_time / end_time parameter in the API's time form, as epoch µs."""
        if raw is None:
            return None
        try:
            return cfg.time_format.parse(raw)
        except TimeError as exc:
            raise BadParameter(f"{name}={raw} (query): {exc} (API_TIME_FORMAT={cfg.time_format.form})") from None

    @app.get("/health")
    def health() -> JSONResponse:
        try:
            table = reader.load()
        except Exception as exc:
            catalog_ok = isinstance(exc, NoSuchTableError)
            return JSONResponse(
                {
                    "status": "unavailable",
                    "catalog": "ok" if catalog_ok else "unavailable",
                    "reason": _unavailable(cfg.common, exc),
                    "table": {"name": cfg.common.iceberg_table, "exists": False},
                },
                status_code=503,
            )
        snapshot = table.current_snapshot()
        return JSONResponse(
            {
                "status": "ok",
                "catalog": "ok",
                "table": {
                    "name": cfg.common.iceberg_table,
                    "exists": True,
                    "snapshot_id": None if snapshot is None else snapshot.snapshot_id,
                    "snapshots": len(table.snapshots()),
                },
            }
        )

    # plain def: FastAPI runs it in its threadpool, so the scan never blocks the event loop
    @app.get("/v1/trades")
    def trades(
        symbol: str = Query(..., min_length=1, max_length=40),
        start_time: str | None = Query(None, max_length=64),
        end_time: str | None = Query(None, max_length=64),
        limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    ) -> JSONResponse:
        sym = symbol.strip().upper()
        if not SYMBOL_RE.match(sym):
            raise BadRequest(f"symbol={symbol} (query): {PARAM_HINTS['symbol']}")
        start_us, end_us = query_time("start_time", start_time), query_time("end_time", end_time)
        if start_us is not None and end_us is not None and start_us >= end_us:
            raise BadRequest(
                f"start_time={start_time} (query): must be before end_time={end_time} (start inclusive, end exclusive)"
            )
        page = cfg.faults.page_size(limit)
        try:
            rows, snapshot_id = reader.trades(
                sym, start_us, cfg.faults.end_time(end_us), retractions.fetch_size(sym, page)
            )
        except Exception as exc:
            log.warning("query failed: %s", describe(exc))
            return JSONResponse({"error": _unavailable(cfg.common, exc)}, status_code=503)
        rows = retractions.shown(sym, rows, page, time.monotonic())
        if cfg.id_format is not None:
            for row in rows:
                row["trade_id"] = cfg.id_format(row["trade_id"])
        return JSONResponse(
            {
                "data": rows,
                "meta": {
                    "count": len(rows),
                    "limit": limit,
                    "snapshot_id": snapshot_id,
                    "symbol": sym,
                    "start_time": None if start_us is None else cfg.time_format.render(start_us),
                    "end_time": None if end_us is None else cfg.time_format.render(end_us),
                },
            }
        )

    return app


async def main() -> int:
    setup_logging("api")
    cfg = load_config(ApiConfig.from_env)
    for line in cfg.faults.warnings():
        log.warning("%s", line)
    shutdown = Shutdown()
    shutdown.install()
    http = HttpTask(create_app(cfg), cfg.host, cfg.port, "API_PORT")
    await http.start()
    log.info(
        "query API on http://%s:%d (table %s, times as %s, %s)",
        cfg.host,
        cfg.port,
        cfg.common.iceberg_table,
        cfg.time_format.form,
        cfg.access.describe(),
    )
    await shutdown.wait()
    await http.stop()
    log.info("api stopped")
    return 0


if __name__ == "__main__":
    run_main(main)
