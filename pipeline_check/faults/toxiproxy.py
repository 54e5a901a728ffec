"""Toxiproxy (Shopify's TCP proxy) driven over its HTTP API: the toxics a network fault sets and removes.

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

from collections.abc import Mapping
from typing import Any, Literal, Self, TypedDict, Unpack

import httpx

from pipeline_check.core.errors import ConfigError, EndpointError

Stream = Literal["upstream", "downstream"]

_FIXES = {
    400: "fix the request (the toxic's attributes are listed in Toxiproxy's README)",
    404: "check the name; GET /proxies lists the proxies and their toxics",
    409: "remove it first or choose another name",
}


class ToxiproxyError(EndpointError):
    """The Toxiproxy API refused a request; names what was asked (proxy, toxic) and what the server said."""

    def __init__(self, url: str, action: str, status: int, said: str) -> None:
        self.status = status
        self.said = said
        fix = _FIXES.get(status, "see the Toxiproxy server's log")
        super().__init__("toxiproxy", url, f"{action} answered HTTP {status}: {said}", fix)


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
