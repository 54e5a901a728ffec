"""Toxiproxy for the tests that check the fault client against a real server: the server's lifecycle and the
admin calls the product never makes (its stack creates the proxies; faults only add and remove toxics)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from pipeline_check.core.errors import ConfigError, EndpointError, StackError
from pipeline_check.core.polling import poll
from pipeline_check.faults.toxiproxy import Stream, Toxiproxy

BINARY_ENV = "PIPELINE_CHECK_TOXIPROXY"
# where `make setup` builds the pinned server in a source checkout; an installed package looks on PATH
PROJECT_BINARY = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "toxiproxy-server"
STOP_TIMEOUT = 5.0
LOG_TAIL_LINES = 20


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


class ToxiproxyAdmin(Toxiproxy):
    """The fault client plus the server's admin API: proxies listed, created, deleted, toggled, reset."""

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

    def _set_enabled(self, name: str, enabled: bool) -> Proxy:
        action = f"{'enabling' if enabled else 'disabling'} proxy {name!r}"
        return Proxy.from_api(self._request("PATCH", f"/proxies/{name}", action, {"enabled": enabled}))


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
        self._api: ToxiproxyAdmin | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api(self) -> ToxiproxyAdmin:
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
        self._api = ToxiproxyAdmin(self.url, timeout=2.0)
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


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
