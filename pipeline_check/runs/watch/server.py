"""The watch's HTTP endpoints: ``/metrics`` (Prometheus text format), ``/healthz`` and ``/status`` (JSON).

A stdlib WSGI server on a thread of its own, so a scrape never waits for the event loop (and a busy
loop never makes a scrape time out). It reads only what the loop publishes whole: the metrics registry
(thread-safe) and the last status document (replaced, never changed in place).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from pipeline_check.core.errors import ConfigError

Health = Callable[[], tuple[bool, str]]
Status = Callable[[], dict[str, Any]]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6; port 0: any free one) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError("--listen", value, "is not HOST:PORT", "write e.g. 127.0.0.1:9464 or [::1]:9464")
    return host, int(port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds up the shutdown


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the watch's own output."""


class StatusServer:
    """Serves the endpoints on ``host:port`` from ``start`` until ``stop``."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, status: Status, health: Health) -> None:
        self.host = host
        self.port = port
        self._metrics = make_wsgi_app(registry)
        self._status = status
        self._health = health
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = _Server6 if ":" in self.host else _Server
        try:
            self._httpd = httpd = make_server(
                self.host, self.port, self._app, server_class=server, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigError(
                "--listen",
                f"{self.host}:{self.port}",
                f"cannot listen ({exc.strerror or exc})",
                "choose another address or port (port 0 takes any free one)",
            ) from None
        self.port = httpd.server_port
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok, reason = self._health()
            return _reply(start_response, "200 OK" if ok else "503 Service Unavailable", reason + "\n", "text/plain")
        if path == "/status":
            body = json.dumps(self._status(), indent=2, allow_nan=False) + "\n"
            return _reply(start_response, "200 OK", body, "application/json")
        return _reply(start_response, "404 Not Found", "endpoints: /metrics /healthz /status\n", "text/plain")


def _reply(start_response: StartResponse, status: str, body: str, kind: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", f"{kind}; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]
