"""Asking the query API what a user of the data would: the API stage's ``query`` for a symbol and a
time window, every request timed."""

from __future__ import annotations

import httpx

from pipeline_check.backends.api.probe import ApiSettings
from pipeline_check.canary.time_forms import forms_in, placeholders, zone
from pipeline_check.core.errors import ConfigError, EndpointError
from pipeline_check.core.jsonpath import compile_path
from pipeline_check.verdict.response_times import ResponseTimes

ALL_TAGS = (0, 2**63 - 1)  # {tag_lo}/{tag_hi} of a query that is not about one run's canaries
LOOKBACKS_MS = (10_000, 300_000, 3_600_000, 86_400_000)  # recent windows, widened until one holds records
AHEAD_MS = 86_400_000  # windows reach this far ahead: records stamped in the future show clock skew
WRONG_KEY = "pipeline-check-wrong-key"


class ApiReader:
    """An HTTP client on the API stage's ``base_url``, with its ``headers`` and ``timeout``."""

    def __init__(
        self,
        settings: ApiSettings,
        stage: str,
        responses: ResponseTimes,
        *,
        tags: tuple[int, int] = ALL_TAGS,
    ) -> None:
        self.settings = settings
        self.where = f"stages.{stage}"
        self.responses = responses
        self.tags = tags
        self._records = compile_path(f"{self.where}.records", settings.records)
        headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
        self.client = httpx.AsyncClient(base_url=settings.base_url, headers=headers, timeout=settings.timeout)

    def url(self, symbol: str, start_ms: int, end_ms: int, limit: int | str | None = None) -> str:
        lo, hi = self.tags
        times = placeholders(start_ms, end_ms, forms_in(self.settings.query), zone(self.settings.time_zone))
        return self.settings.query.format(
            symbol=symbol, limit=limit or self.settings.limit, tag_lo=lo, tag_hi=hi, **times
        )

    async def get(
        self, path: str, headers: dict[str, str] | None = None, times: ResponseTimes | None = None
    ) -> httpx.Response:
        """One request, timed into ``times`` (default: ``responses``); an error status is returned, not raised."""
        timer = self.responses if times is None else times
        response: httpx.Response = await timer.timed(lambda: self.client.get(path, headers=headers))
        return response

    async def check_health(self) -> None:
        """``EndpointError`` unless the health path (or, without one, a query) answers below 400."""
        path = self.settings.health or self.url("CANARYUSDT", 0, 1)
        try:
            response = await self.get(path)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"{self.where}.base_url", self.settings.base_url + path,
                f"does not answer ({type(exc).__name__}: {exc})", "is the API running and the address right?",
            ) from None  # fmt: skip
        if response.status_code >= 400:
            raise EndpointError(
                f"{self.where}.base_url", self.settings.base_url + path, f"answers HTTP {response.status_code}",
                f"is the service healthy? ({self.where}.health names the path checked)",
            )  # fmt: skip

    async def records(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, object]]:
        """The records one query returns; ``httpx.HTTPError`` for a failed request or an error status."""
        url = self.url(symbol, start_ms, end_ms)
        response = await self.get(url)
        response.raise_for_status()
        try:
            found = self._records(response.json())
        except ValueError as exc:
            raise httpx.DecodingError(f"the answer to {url} is not JSON ({exc})") from None
        if not isinstance(found, list):
            raise ConfigError(
                f"{self.where}.records", self.settings.records, f"finds no list in the API's answer to {url}",
                "set it to the JMESPath of the list of records",
            )  # fmt: skip
        return [r for r in found if isinstance(r, dict)]

    async def recent(self, symbol: str, now_ms: int) -> tuple[int, list[dict[str, object]]]:
        """The records of the narrowest recent window that holds any, and where that window starts."""
        start = now_ms - LOOKBACKS_MS[-1]
        for back in LOOKBACKS_MS:
            start = now_ms - back
            records = await self.records(symbol, start, now_ms + AHEAD_MS)
            if records:
                return start, records
        return start, []

    async def status(self, path: str, key: str) -> int:
        """The status code of ``GET path`` sending the configured headers (``key="configured"``), none of
        them (``"none"``) or each with its secret replaced (``"wrong"``)."""
        request = self.client.build_request("GET", path)
        for name, value in self.settings.headers.items():
            if key == "none":
                del request.headers[name]
            elif key == "wrong":
                scheme, _, secret = value.get_secret_value().rpartition(" ")
                request.headers[name] = f"{scheme} {WRONG_KEY}" if scheme and secret else WRONG_KEY
        try:
            response = await self.responses.timed(lambda: self.client.send(request))
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"{self.where}.base_url", self.settings.base_url + path,
                f"does not answer ({type(exc).__name__}: {exc})", "is the API running and the address right?",
            ) from None  # fmt: skip
        return response.status_code

    async def close(self) -> None:
        await self.client.aclose()
