"""The query API's optional access rules and id format, all off by default.

API_KEYS=k1,k2          every path but /health needs one of these keys in the API_KEY_HEADER header
                        (default X-API-Key): none sent is 401, an unknown one 403
API_RATE_LIMIT=20       requests per second per key (per client address without keys), bursts of as many;
                        beyond it 429 with Retry-After (whole seconds until the next request is allowed)
API_ID_FORMAT=BINANCE-{id}   trade ids are served as this text, {id} the table's number (as APIs that
                        namespace ids by exchange do); unset, they are numbers
"""

from __future__ import annotations

import hmac
import math
import string
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .common import env_float, env_str, fail

PUBLIC_PATHS = frozenset({"/health"})
MAX_RATE = 100_000.0


@dataclass(frozen=True, slots=True)
class IdFormat:
    """A trade id as text: ``template`` with ``{id}`` replaced."""

    template: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IdFormat | None:
        template = env_str("API_ID_FORMAT", "", env)
        if not template:
            return None
        try:
            names = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
        except ValueError as exc:
            fail("API_ID_FORMAT", template, f"is not a template ({exc}); e.g. BINANCE-{{id}}")
        if names != ["id"]:
            fail("API_ID_FORMAT", template, "must hold {id} once and no other placeholder, e.g. BINANCE-{id}")
        return cls(template)

    def __call__(self, trade_id: int) -> str:
        return self.template.format(id=trade_id)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class RateLimit:
    """A token bucket per caller: ``rate`` requests a second, bursts of ``rate`` (at least one request)."""

    rate: float
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, caller: str, now: float | None = None) -> float:
        """0 when ``caller`` may send a request now (and it is counted), else seconds until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            burst = max(1.0, self.rate)
            bucket = self._buckets.setdefault(caller, _Bucket(burst, now))
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """Who may call the API and how often."""

    keys: tuple[str, ...] = ()
    header: str = "X-API-Key"
    rate_limit: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiAccess:
        raw = env_str("API_KEYS", "", env)
        keys = tuple(k.strip() for k in raw.split(",") if k.strip())
        if raw and not keys:
            fail("API_KEYS", raw, "names no key; give comma-separated keys or leave it unset")
        header = env_str("API_KEY_HEADER", "X-API-Key", env)
        if not all(c.isalnum() or c == "-" for c in header):
            fail("API_KEY_HEADER", header, "must be an HTTP header name (letters, digits, '-')")
        rate = env_float("API_RATE_LIMIT", 0.0, minimum=0.0, maximum=MAX_RATE, env=env)
        return cls(keys, header, rate or None)

    def describe(self) -> str:
        keys = f"{len(self.keys)} API key(s) in {self.header}" if self.keys else "no API key"
        rate = f", {self.rate_limit:g} requests/s per caller" if self.rate_limit else ""
        return keys + rate

    def middleware(self) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
        """A Starlette HTTP middleware enforcing the keys and the rate limit."""
        limit = RateLimit(self.rate_limit) if self.rate_limit else None
        keys = [k.encode() for k in self.keys]

        async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            if request.url.path in PUBLIC_PATHS:
                return await call_next(request)
            given = request.headers.get(self.header)
            if keys:
                if given is None:
                    return JSONResponse({"error": f"missing API key: send it in the {self.header} header"}, 401)
                if not any(hmac.compare_digest(given.encode(), key) for key in keys):
                    return JSONResponse({"error": f"API key not accepted ({self.header})"}, 403)
            if limit is not None:
                caller = given if keys and given else (request.client.host if request.client else "-")
                wait = limit.wait(caller)
                if wait:
                    return JSONResponse(
                        {"error": f"rate limit of {limit.rate:g} requests/s exceeded; retry later"},
                        429,
                        headers={"Retry-After": str(max(1, math.ceil(wait)))},
                    )
            return await call_next(request)

        return check
