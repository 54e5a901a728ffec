"""Toxiproxy (Shopify's TCP proxy) driven over its HTTP API: the server's lifecycle and a typed client.

Kernel netem is not available everywhere pipeline-check runs, so a network fault is a proxy between two
parts of a pipeline with *toxics* on it. The API of the pinned server (v2.12.0, ``api.go``)::

    GET    /version                           {"version": "..."}
    GET    /proxies                           {name: proxy, ...}
    POST   /proxies                           {name, listen, upstream, enabled} -> 201 proxy
    GET    /proxies/{proxy}                   proxy with its toxics
    PATCH  /proxies/{proxy}                   {"enabled": false} closes its connections and stops listening
    DELETE /proxies/{proxy}                   -> 204
    POST   /proxies/{proxy}/toxics            {name, type, stream, toxicity, attributes} -> toxic
    DELETE /proxies/{proxy}/toxics/{toxic}    -> 204
    POST   /reset                             every proxy enabled, every toxic removed -> 204

Errors answer ``{"error": "...", "status": N}``. A toxic's ``stream`` is ``downstream`` (from the upstream
server to the client, the default) or ``upstream`` (from the client to the server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Self, TypedDict, Unpack

import httpx

from pipeline_check.core.errors import ConfigError, EndpointError, StackError
from pipeline_check.core.polling import poll

Stream = Literal["upstream", "downstream"]
BINARY_ENV = "PIPELINE_CHECK_TOXIPROXY"
# where `make setup` builds the pinned server in a source checkout; an installed package looks on PATH
PROJECT_BINARY = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "toxiproxy-server"
STOP_TIMEOUT = 5.0
LOG_TAIL_LINES = 20

_FIXES = {
    400: "fix the request (the toxic's attributes are listed in Toxiproxy's README)",
    404: "check the name; Toxiproxy.proxies() lists the proxies and their toxics",
    409: "remove it first or choose another name",
}


class ToxiproxyError(EndpointError):
    """The Toxiproxy API refused a request; names what was asked (proxy, toxic) and what the server said."""

    def __init__(self, url: str, action: str, status: int, said: str) -> None:
        self.status = status
        self.said = said
        fix = _FIXES.get(status, "see the Toxiproxy server's log")
        super().__init__("toxiproxy", url, f"{action} answered HTTP {status}: {said}", fix)


@dataclass(frozen=True, slots=True)
class Toxic:
    """A toxic on a proxy, as the server reports it."""

    name: str
    kind: str
    stream: Stream
    toxicity: float
    attributes: Mapping[str, int]

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Toxic:
        return cls(data["name"], data["type"], data["stream"], data["toxicity"], dict(data["attributes"]))


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy as the server reports it; ``listen`` is the address it bound (``:0`` asks for a free port)."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...]

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Proxy:
        toxics = tuple(Toxic.from_api(t) for t in data.get("toxics") or ())
        return cls(data["name"], data["listen"], data["upstream"], data["enabled"], toxics)

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ToxicOptions(TypedDict, total=False):
    """Options every toxic takes: which direction, what fraction of connections, and its name
    (the server's default is ``{type}_{stream}``, so two toxics of one kind on one stream need names)."""

    stream: Stream
    toxicity: float
    name: str | None


class Toxiproxy:
    """A client of one Toxiproxy server's HTTP API. Synchronous: faults are set between steps of a run."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- server and proxies -----------------------------------------------------------------------

    def version(self) -> str:
        return str(self._request("GET", "/version", "asking the version")["version"])

    def proxies(self) -> dict[str, Proxy]:
        data = self._request("GET", "/proxies", "listing proxies")
        return {name: Proxy.from_api(item) for name, item in data.items()}

    def proxy(self, name: str) -> Proxy:
        return Proxy.from_api(self._request("GET", f"/proxies/{name}", f"showing proxy {name!r}"))

    def create_proxy(self, name: str, listen: str, upstream: str, *, enabled: bool = True) -> Proxy:
        """A proxy listening on ``listen`` (``host:port``; port 0 for a free one) forwarding to ``upstream``."""
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        action = f"creating proxy {name!r} ({listen} -> {upstream})"
        return Proxy.from_api(self._request("POST", "/proxies", action, body))

    def delete_proxy(self, name: str) -> None:
        self._request("DELETE", f"/proxies/{name}", f"deleting proxy {name!r}")

    def enable(self, name: str) -> Proxy:
        """Listen again after :meth:`disable`."""
        return self._set_enabled(name, True)

    def disable(self, name: str) -> Proxy:
        """Close the proxy's connections and stop listening: the link is down (connections are refused)."""
        return self._set_enabled(name, False)

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self._request("POST", "/reset", "resetting every proxy")

    # -- toxics -----------------------------------------------------------------------------------

    def add_toxic(
        self,
        proxy: str,
        kind: str,
        attributes: Mapping[str, int],
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
    ) -> str:
        """Add a toxic of ``kind`` (``latency``, ``timeout``, ...) to ``proxy``; returns its name."""
        label = f"toxic {name or kind!r} ({kind}, {stream}) on proxy {proxy!r}"
        if not 0.0 <= toxicity <= 1.0:
            raise ConfigError("toxicity", toxicity, f"must be between 0 and 1 ({label})", "give a fraction")
        body: dict[str, Any] = {"type": kind, "stream": stream, "toxicity": toxicity, "attributes": dict(attributes)}
        if name is not None:
            body["name"] = name
        return str(self._request("POST", f"/proxies/{proxy}/toxics", f"adding {label}", body)["name"])

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._request("DELETE", f"/proxies/{proxy}/toxics/{name}", f"removing toxic {name!r} from proxy {proxy!r}")

    def latency(self, proxy: str, latency_ms: int, jitter_ms: int = 0, **options: Unpack[ToxicOptions]) -> str:
        """Delay every chunk by ``latency_ms`` ± ``jitter_ms``."""
        attributes = {"latency": _at_least("latency_ms", latency_ms, 0), "jitter": _at_least("jitter_ms", jitter_ms, 0)}
        return self.add_toxic(proxy, "latency", attributes, **options)

    def cut(self, proxy: str, **options: Unpack[ToxicOptions]) -> str:
        """A black hole: data on the stream is dropped and the connection stays open (``timeout`` 0)."""
        return self.add_toxic(proxy, "timeout", {"timeout": 0}, **options)

    def reset_peer(self, proxy: str, after_ms: int = 0, **options: Unpack[ToxicOptions]) -> str:
        """Reset the connection (TCP RST) ``after_ms`` after data arrives on the stream."""
        return self.add_toxic(proxy, "reset_peer", {"timeout": _at_least("after_ms", after_ms, 0)}, **options)

    def bandwidth(self, proxy: str, rate_kb_s: int, **options: Unpack[ToxicOptions]) -> str:
        """Limit the stream to ``rate_kb_s`` kilobytes (1,000 bytes) per second."""
        return self.add_toxic(proxy, "bandwidth", {"rate": _at_least("rate_kb_s", rate_kb_s, 1)}, **options)

    def slicer(
        self, proxy: str, average_size: int, size_variation: int = 0, delay_us: int = 0, **options: Unpack[ToxicOptions]
    ) -> str:
        """Slice data into chunks of ``average_size`` ± ``size_variation`` bytes, ``delay_us`` apart."""
        if not 0 <= size_variation < average_size:
            raise ConfigError(
                "size_variation", size_variation, f"must be >= 0 and below average_size={average_size}", "lower it"
            )
        attributes = {
            "average_size": average_size,
            "size_variation": size_variation,
            "delay": _at_least("delay_us", delay_us, 0),
        }
        return self.add_toxic(proxy, "slicer", attributes, **options)

    # -- plumbing ---------------------------------------------------------------------------------

    def _set_enabled(self, name: str, enabled: bool) -> Proxy:
        action = f"{'enabling' if enabled else 'disabling'} proxy {name!r}"
        return Proxy.from_api(self._request("PATCH", f"/proxies/{name}", action, {"enabled": enabled}))

    def _request(self, method: str, path: str, action: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise EndpointError(
                "toxiproxy", self.url, f"{action} failed: no answer ({type(exc).__name__})", "is the server running?"
            ) from None
        if response.is_error:
            raise ToxiproxyError(self.url, action, response.status_code, _said(response))
        return response.json() if response.content else None


class ToxiproxyServer:
    """One ``toxiproxy-server`` process: started on a free (or given) API port, ready once ``/version``
    answers, stopped at the end of a ``with`` block. ``api`` is a client of it."""

    def __init__(
        self, *, binary: Path | None = None, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0
    ) -> None:
        self.binary = binary
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._api: Toxiproxy | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api(self) -> Toxiproxy:
        if self._api is None:
            raise StackError("the Toxiproxy server is not running; start() it (or use it in a `with` block)")
        return self._api

    def start(self) -> Self:
        if self._process is not None:
            raise StackError(f"the Toxiproxy server already runs on {self.url} (pid {self._process.pid})")
        binary = find_binary(self.binary)
        if self.port == 0:
            self.port = _free_port(self.host)
        # a file, not a pipe: nobody reads the log while the server runs, and a full pipe would block it
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [str(binary), "-host", self.host, "-port", str(self.port)],
            # unset, the level is trace: every API request and toxic change would be logged
            env={**os.environ, "LOG_LEVEL": "info"},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._api = Toxiproxy(self.url, timeout=2.0)
        try:
            if poll(self._answers, self.start_timeout, initial=0.05) is None:
                raise StackError(
                    f"toxiproxy-server ({binary}) did not answer {self.url}/version within {self.start_timeout:g}s; "
                    f"last log lines:\n{self.log_tail()}"
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the server (it shuts down cleanly), SIGKILL it if it lingers; close the client and log."""
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(STOP_TIMEOUT)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self._log is None:
            return "(no log)"
        self._log.seek(0)
        return b"".join(self._log.readlines()[-lines:]).decode(errors="replace").rstrip("\n")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answers(self) -> bool:
        if self._process is None:
            raise RuntimeError("ToxiproxyServer polled before start()")
        if self._process.poll() is not None:
            raise StackError(
                f"toxiproxy-server exited with code {self._process.returncode} while starting on {self.url}; "
                f"last log lines:\n{self.log_tail()}"
            )
        try:
            self.api.version()
        except EndpointError:
            return False
        return True


def find_binary(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$PIPELINE_CHECK_TOXIPROXY``, else the one `make setup` builds, else
    ``toxiproxy-server`` on PATH."""
    setting = "toxiproxy binary"
    if explicit is None and os.environ.get(BINARY_ENV):
        setting, explicit = BINARY_ENV, Path(os.environ[BINARY_ENV])
    if explicit is not None:
        if _executable(explicit):
            return explicit
        raise ConfigError(
            setting, str(explicit), "is not an executable file", "point it at a toxiproxy-server binary or unset it"
        )
    if _executable(PROJECT_BINARY):
        return PROJECT_BINARY
    on_path = shutil.which("toxiproxy-server")
    if on_path is None:
        raise StackError(
            f"toxiproxy-server not found (not at {PROJECT_BINARY}, ${BINARY_ENV} unset, not on PATH); "
            "run `make setup`, which builds it with Go"
        )
    return Path(on_path)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _said(response: httpx.Response) -> str:
    """The server's ``error`` message, or its body when that is not the JSON it usually sends."""
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or response.reason_phrase


def _at_least(setting: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise ConfigError(setting, value, f"must be >= {minimum}", f"give a whole number >= {minimum}")
    return value


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
