"""Plumbing shared by every service: env parsing, logging, signals, the health HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger(__name__)

T = TypeVar("T")

# Exit code for a bad configuration, like pipeline-check's ExitCode.USAGE.
EXIT_CONFIG = 2


# --------------------------------------------------------------------------- env


class ConfigError(Exception):
    """A missing or invalid environment variable; the message names it."""


def fail(name: str, value: str | None, what: str) -> NoReturn:
    """Raise the one-line ConfigError: ``NAME='value' (env): what is wrong; the fix``."""
    shown = "<unset>" if value is None else repr(value)
    raise ConfigError(f"{name}={shown} (env): {what}")


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    """The variable's value, stripped; None when unset or blank."""
    return (os.environ if env is None else env).get(name, "").strip() or None


def _unset(name: str, default: T | None, hint: str) -> T:
    """What an unset variable means: ``default``, or an error when it has none (it is required)."""
    if default is None:
        fail(name, None, f"required; {hint}")
    return default


def env_str(name: str, default: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """A non-empty string; ``default`` when unset (required when ``default`` is None)."""
    value = _raw(name, env)
    return _unset(name, default, "set it in the service environment") if value is None else value


def env_int(
    name: str,
    default: int | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """An integer within [minimum, maximum]; ``default`` when unset."""
    raw = _raw(name, env)
    if raw is None:
        return _unset(name, default, "set it to an integer")
    try:
        value = int(raw, 10)
    except ValueError:
        fail(name, raw, "must be an integer")
    if minimum is not None and value < minimum:
        fail(name, raw, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        fail(name, raw, f"must be <= {maximum}")
    return value


def env_optional_int(
    name: str, *, minimum: int | None = None, maximum: int | None = None, env: Mapping[str, str] | None = None
) -> int | None:
    """An integer within [minimum, maximum], or None when unset (a switch that is off)."""
    if _raw(name, env) is None:
        return None
    return env_int(name, minimum=minimum, maximum=maximum, env=env)


def env_float(
    name: str, default: float, *, minimum: float, maximum: float, env: Mapping[str, str] | None = None
) -> float:
    """A finite number within [minimum, maximum]; ``default`` when unset."""
    raw = _raw(name, env)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        fail(name, raw, f"must be a number between {minimum:g} and {maximum:g}")
    if not math.isfinite(value) or not minimum <= value <= maximum:
        fail(name, raw, f"must be between {minimum:g} and {maximum:g}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...], env: Mapping[str, str] | None = None) -> str:
    """One of ``choices`` (case-insensitive); ``default`` when unset."""
    raw = _raw(name, env)
    if raw is None:
        return default
    if raw.lower() not in choices:
        fail(name, raw, f"must be one of {', '.join(choices)}")
    return raw.lower()


def env_port(name: str, default: int | None = None, env: Mapping[str, str] | None = None) -> int:
    return env_int(name, default, minimum=1, maximum=65535, env=env)


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    raw = _raw(name, env)
    if raw is None:
        return default
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    fail(name, raw, "must be a boolean (1/0, true/false)")


_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def env_topic(name: str, default: str | None = None, env: Mapping[str, str] | None = None) -> str:
    value = env_str(name, default, env)
    if not _TOPIC_RE.match(value) or value in {".", ".."}:
        fail(name, value, "must be a Kafka topic name (letters, digits, '.', '_', '-')")
    return value


@dataclass(frozen=True, slots=True)
class ObjectStore:
    """The S3 API the warehouse lives on (S3_*): unset parts come from the AWS default chain."""

    endpoint: str
    access_key_id: str | None
    secret_access_key: str | None
    region: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ObjectStore | None:
        """None when S3_ENDPOINT is unset (a local warehouse, or S3 at AWS itself)."""
        endpoint = _raw("S3_ENDPOINT", env)
        if endpoint is None:
            return None
        if not endpoint.startswith(("http://", "https://")):
            fail("S3_ENDPOINT", endpoint, "must be http(s)://HOST:PORT, e.g. http://127.0.0.1:19000")
        return cls(endpoint, _raw("S3_ACCESS_KEY_ID", env), _raw("S3_SECRET_ACCESS_KEY", env), _raw("S3_REGION", env))

    def properties(self) -> dict[str, str]:
        """pyiceberg FileIO properties (pyarrow's S3 filesystem); path-style addressing, as local stores need."""
        given = {
            "s3.endpoint": self.endpoint,
            "s3.access-key-id": self.access_key_id,
            "s3.secret-access-key": self.secret_access_key,
            "s3.region": self.region,
        }
        return {"s3.force-virtual-addressing": "false", **{k: v for k, v in given.items() if v is not None}}


@dataclass(frozen=True, slots=True)
class CommonConfig:
    """The variables every Python service gets (stack.toml [env]).

    The catalog is a pyiceberg SQL catalog (ICEBERG_CATALOG_URI an SQLAlchemy URL, ICEBERG_WAREHOUSE
    required) or an Iceberg REST catalog (an http(s) URL; the server decides the warehouse, ICEBERG_WAREHOUSE
    is passed along when set); S3_* point both at an S3-compatible store.
    """

    kafka_bootstrap: str
    raw_topic: str
    raw_topic_partitions: int
    dlq_topic: str
    iceberg_catalog_uri: str
    iceberg_warehouse: str | None
    iceberg_table: str
    object_store: ObjectStore | None = None

    @property
    def table_namespace(self) -> str:
        return self.iceberg_table.rsplit(".", 1)[0]

    @property
    def table_name(self) -> str:
        return self.iceberg_table.rsplit(".", 1)[1]

    @property
    def rest_catalog(self) -> bool:
        return self.iceberg_catalog_uri.startswith(("http://", "https://"))

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg ``load_catalog`` properties of the catalog these variables name."""
        props = {"type": "rest" if self.rest_catalog else "sql", "uri": self.iceberg_catalog_uri}
        if self.iceberg_warehouse is not None:
            props["warehouse"] = self.iceberg_warehouse
        if self.object_store is not None:
            props |= self.object_store.properties()
        return props

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommonConfig:
        table = env_str("ICEBERG_TABLE", env=env)
        if not _IDENT_RE.match(table):
            fail("ICEBERG_TABLE", table, "must be <namespace>.<table>, e.g. market.trades")
        uri = env_str("ICEBERG_CATALOG_URI", env=env)
        if "://" not in uri:
            fail(
                "ICEBERG_CATALOG_URI",
                uri,
                "must be an SQLAlchemy URL (sqlite:////data/catalog.db) or a REST catalog's http(s):// URL",
            )
        rest = uri.startswith(("http://", "https://"))
        warehouse = _raw("ICEBERG_WAREHOUSE", env) if rest else env_str("ICEBERG_WAREHOUSE", env=env)
        if warehouse is not None and "://" not in warehouse:
            fail("ICEBERG_WAREHOUSE", warehouse, "must be a URI, e.g. file:///data/warehouse or s3://bucket/path")
        return cls(
            kafka_bootstrap=env_str("KAFKA_BOOTSTRAP", env=env),
            raw_topic=env_topic("RAW_TOPIC", env=env),
            raw_topic_partitions=env_int("RAW_TOPIC_PARTITIONS", minimum=1, maximum=10_000, env=env),
            dlq_topic=env_topic("DLQ_TOPIC", env=env),
            iceberg_catalog_uri=uri,
            iceberg_warehouse=warehouse,
            iceberg_table=table,
            object_store=ObjectStore.from_env(env),
        )


def load_config(factory: Callable[[], T]) -> T:
    """Build a config; on ConfigError log one line and exit with code 2."""
    try:
        return factory()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        logging.shutdown()
        sys.exit(EXIT_CONFIG)


# ----------------------------------------------------------------------- logging


def setup_logging(service: str) -> None:
    """Plain INFO lines on stdout (the stack driver captures stdout to a file)."""
    handler = logging.StreamHandler(sys.stdout)  # StreamHandler flushes after every record
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # aiokafka logs every failed reconnect at ERROR while Kafka is down; our own health/state
    # logging reports outages once per state change, so keep only its critical lines.
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    logging.getLogger("websockets").setLevel(logging.WARNING)


class StateLog:
    """Log a line only when a named state changes (not once per retry)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._states: dict[str, str] = {}

    def set(self, key: str, state: str, detail: str = "", level: int = logging.INFO) -> bool:
        if self._states.get(key) == state:
            return False
        self._states[key] = state
        self._logger.log(level, "%s: %s%s", key, state, f" ({detail})" if detail else "")
        return True


# ----------------------------------------------------------------------- signals


class Shutdown:
    """SIGTERM/SIGINT -> an asyncio.Event; a second signal is logged (the deadline still applies)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signal_time: float | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.trigger, sig)

    def trigger(self, sig: int | None = None) -> None:
        if self.event.is_set():
            log.info("signal %s again: still shutting down", sig)
            return
        self.signal_time = time.monotonic()
        log.info("signal %s: shutting down gracefully", signal.Signals(sig).name if sig else "-")
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for shutdown up to ``timeout`` seconds; True when it was requested."""
        if timeout is None:
            await self.event.wait()
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        return self.event.is_set()


def run_main(main: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """asyncio.run the service's main and exit with its code."""
    try:
        code = asyncio.run(main())
    except ServiceError as exc:
        log.error("%s", exc)
        code = 1
    except KeyboardInterrupt:  # only before our handlers are installed
        code = 0
    logging.shutdown()
    sys.exit(code)


# ------------------------------------------------------------------ HTTP servers


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM.

    uvicorn's ``capture_signals`` replaces the loop's handlers and re-raises the signal after
    shutdown, which would kill the process with -SIGTERM instead of letting it exit 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Any, host: str, port: int) -> EmbeddedServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        # uvicorn's own logging config would replace our stdout handler
        log_config=None,
    )
    return EmbeddedServer(config)


HealthReport = Callable[[], tuple[bool, dict[str, Any]]]


def health_app(report: HealthReport) -> Starlette:
    """A Starlette app with ``GET /health``: 200 when ``report()`` says healthy, else 503."""

    async def health(_: Request) -> JSONResponse:
        ok, body = report()
        return JSONResponse(body, status_code=200 if ok else 503)

    return Starlette(routes=[Route("/health", health, methods=["GET"])])


class ServiceError(Exception):
    """A startup failure reported as one line and exit code 1 (not a traceback)."""


class HttpTask:
    """An embedded uvicorn server run as a task of the service's event loop."""

    def __init__(self, app: Any, host: str, port: int, port_var: str) -> None:
        self.server = make_server(app, host, port)
        self.host, self.port, self.port_var = host, port, port_var
        self.task: asyncio.Task[None] | None = None

    def _bind(self) -> socket.socket:
        # bind ourselves: uvicorn would log and sys.exit(1) from inside a task instead
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ServiceError(
                f"{self.port_var}={self.port}: cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc}; pick a free port"
            ) from None
        sock.set_inheritable(True)
        return sock

    async def start(self) -> None:
        """Start serving; returns once the socket listens."""
        sock = self._bind()
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]), name="http")
        while not self.server.started and not self.task.done():
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()

    async def stop(self, timeout: float = 3.0) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, timeout)
        except TimeoutError:
            log.warning("HTTP server did not stop within %.1fs", timeout)


def describe(exc: BaseException, limit: int = 300) -> str:
    """One line for logs and health bodies: "Type: first line of the message"."""
    name = type(exc).__name__
    text = (str(exc).strip().splitlines() or [""])[0][:limit]
    if isinstance(exc, TimeoutError) and not text:
        text = "timed out"
    # aiokafka's errors already start with their class name
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def utc_ms() -> int:
    return time.time_ns() // 1_000_000
