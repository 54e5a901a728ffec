"""The ``api`` probe: asks the query API for the run's canaries, the way a user of the data would.

Each poll queries, per canary symbol, only the time window that still holds undelivered canaries (their
send times are known), and pages through it by the ``time_field`` until an answer holds nothing new.
The API's order (newest or oldest first) and page cap (fewer records than ``limit``) are learnt from its
answers, not assumed, and noted; an API that ignores the window's end (a page that repeats the last one's
edge) is noted and paged no further. The poll interval adapts (``backends.polling``): ``poll_interval``
while the upstream stage holds canaries the API has not shown yet (a late look would read as API latency)
and during the settle window, ``idle_interval`` otherwise; ``max_request_rate`` caps the requests.

Every request is timed (``responses``): the API's response times, judged by ``api.response`` thresholds.

Copies of one canary within a complete answer are duplicates; a canary shown before and missing from a
later complete answer of its window is gone (retracted). At the end, a last sweep covers the whole run,
and canaries still missing are searched ``search_window`` either side of their send time: one found
there is counted where it is, with the field that moved as a difference, not as lost.

Access: ``headers`` carry an API key or token (masked everywhere). A 401 or 403 on the health check or
before any query was answered stops the run naming ``headers`` (exit 2): no retry makes a wrong key right. A
429 is waited out (``Retry-After``, else a growing backoff) and asked again; the count is noted. A tag the
API reformatted (``"BINANCE-123"``) is read with ``tag_pattern`` or ``tag_regex`` (``canary.tag_readers``).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import string
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Annotated, Any, ClassVar

import httpx
from pydantic import AfterValidator, Field, SecretStr

from pipeline_check.backends.polling import PollPolicy, PollSettings
from pipeline_check.backends.probe import ProbeContext, Ref
from pipeline_check.canary.fidelity import Fields
from pipeline_check.canary.tag_readers import TagSettings, tag_reader
from pipeline_check.core.durations import Duration, NonNegativeDuration
from pipeline_check.core.errors import ConfigError, EndpointError
from pipeline_check.core.jsonpath import check_path, compile_path
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.core.redaction import MASK
from pipeline_check.verdict.response_times import ResponseTimes

MAX_PAGES = 1000  # per window: a guard against an API that ignores the time bounds
RATE_LIMIT_RETRIES = 8  # 429s waited out per request before it counts as failed
RATE_LIMIT_BACKOFF = 0.5  # the first wait of a 429 without Retry-After, doubling
RATE_LIMIT_MAX_WAIT = 30.0
PLACEHOLDERS = ("symbol", "start_ms", "end_ms", "limit", "tag_lo", "tag_hi")
SHOWN = 300  # characters of an answer quoted in an error


def _base_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value.rstrip("/")


def _template(value: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"is not a query template ({exc})") from None
    unknown = names - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(f"has unknown placeholders {sorted(unknown)}; known: {', '.join(PLACEHOLDERS)}")
    return value


class ApiSettings(TagSettings, PollSettings):
    base_url: Annotated[str, AfterValidator(_base_url)]
    query: Annotated[str, AfterValidator(_template)] = (
        "/v1/trades?symbol={symbol}&start_time={start_ms}&end_time={end_ms}&limit={limit}"
    )
    health: str | None = "/health"
    records: Annotated[str, AfterValidator(check_path)] = "data"  # JMESPath to the list of records
    tag_field: Annotated[str, AfterValidator(check_path)] = "trade_id"
    time_field: Annotated[str, AfterValidator(check_path)] | None = "trade_time"  # epoch ms; pages by it
    order_field: str | None = None  # a record field that orders records per key: ordering is judged on it
    limit: int = Field(default=1000, ge=1)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = 5.0
    search_window: NonNegativeDuration = 86_400.0  # either side of a missing canary's send time, at the end
    fields: Fields = Field(default_factory=dict)


@dataclass(slots=True)
class Answer:
    """A window's records as far as the API showed them: copies per tag, the first record of each."""

    counts: Counter[int] = field(default_factory=Counter)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    complete: bool = True


class ApiProbe:
    Settings: ClassVar[type[PluginSettings]] = ApiSettings

    def __init__(self, settings: ApiSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        where = f"stages.{ctx.stage}"
        self._where = where
        self._records = compile_path(f"{where}.records", settings.records)
        self._tag = tag_reader(settings, where)
        self._raw_tag = compile_path(f"{where}.tag_field", settings.tag_field)
        self._time = compile_path(f"{where}.time_field", settings.time_field) if settings.time_field else None
        self._order = compile_path(f"{where}.order_field", settings.order_field) if settings.order_field else None
        headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
        self._client = httpx.AsyncClient(base_url=settings.base_url, headers=headers, timeout=settings.timeout)
        self._poll = PollPolicy.of(settings, ctx)
        self.responses = ResponseTimes()  # every request this probe makes (api.response thresholds)
        self._shown: dict[int, tuple[str, int | None]] = {}  # tag -> (symbol, record time) when last shown
        self._largest_page = 0  # the most records one answer held: the API's page cap, as far as seen
        self._largest_seen = 0  # answers of that size
        self._order_noted = False
        self._cap_noted = False
        self._ignored_noted = False
        self._settle_swept = False  # a sweep of the whole run completed while the run settled
        self._checked = False  # records and tag_field proven on a non-empty answer
        self._answered = False  # a query was answered: access works (a later 401/403 is noted, not fatal)
        self._throttled = 0  # 429 answers waited out
        self._throttled_s = 0.0

    async def start(self) -> None:
        path = self.settings.health or self._url("CANARYUSDT", 0, 1)
        url = self.settings.base_url + path
        try:
            response = await self._get(path)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"{self._where}.base_url", url, f"does not answer ({type(exc).__name__}: {exc})",
                "is the API running and the address right?",
            ) from None  # fmt: skip
        if response.status_code in (401, 403):
            raise self._access_error(url, response)
        if response.status_code >= 400:
            raise EndpointError(
                f"{self._where}.base_url", url, f"answers HTTP {response.status_code}",
                f"is the service healthy? ({self._where}.health names the path checked)",
            )  # fmt: skip
        if self.settings.order_field:
            self.ctx.recorder.declare_ordered(self.ctx.stage)

    async def run(self, stop: asyncio.Event) -> None:
        ctx = self.ctx
        while not stop.is_set():
            # all delivered: keep re-reading the run's windows, for late copies and retractions
            pending, settling = ctx.recorder.pending_windows_ms(ctx.stage), ctx.pace.settling
            windows = pending or ctx.recorder.run_windows_ms()
            await asyncio.gather(*(self._sweep(s, first, last + 1) for s, (first, last) in windows.items()))
            self._settle_swept |= settling and not pending  # the whole run swept within the settle window
            await self._poll.wait(stop)

    async def finish(self) -> None:
        """Sweep the whole run once more (every copy, every retraction) unless a sweep of it was made within
        the settle window (that was the last pass: the time to verdict need not wait for another), search
        missing canaries either side of their window, then close the client."""
        try:
            ctx = self.ctx
            if not self._settle_swept:  # every window at once: the time to verdict waits for the slowest
                windows = ctx.recorder.run_windows_ms()
                await asyncio.gather(*(self._sweep(s, first, last + 1) for s, (first, last) in windows.items()))
            wide = int(self.settings.search_window * 1000)
            if wide and self._time is not None:
                for symbol, (first, last) in ctx.recorder.pending_windows_ms(ctx.stage).items():
                    found = await self._sweep(symbol, max(0, first - wide), last + 1 + wide)
                    if found:
                        ctx.note(
                            f"{found} canaries of {symbol} found outside their send-time window (a time field moved)"
                        )
        finally:
            await self._client.aclose()
            if self._throttled:
                self.ctx.note(
                    f"API answered 429 (rate limited) {self._throttled} times; waited {self._throttled_s:.1f}s in all "
                    "before asking again"
                )

    @property
    def resolution(self) -> float:
        return self._poll.resolution

    async def _sweep(self, symbol: str, start_ms: int, end_ms: int) -> int:
        """Query ``[start_ms, end_ms)`` page by page; tell the recorder what it holds; return how many
        canaries are new."""
        answer = await self._pages(symbol, start_ms, end_ms)
        now = self.ctx.clock.now()
        self._poll.looked(now)
        recorder, stage, fields = self.ctx.recorder, self.ctx.stage, self.settings.fields
        new = 0
        for tag, copies in answer.counts.items():
            record = answer.records[tag]
            when = self._time(record) if self._time is not None else None
            self._shown[tag] = (symbol, when if isinstance(when, int) else None)
            if recorder.seen(stage, tag, now, copies=copies, ref=self._ref(record)):
                new += 1
                if fields:
                    recorder.diff(stage, tag, record, fields)
        if answer.complete:
            for tag, (shown_symbol, when) in self._shown.items():
                inside = when is not None and start_ms <= when < end_ms
                if shown_symbol == symbol and inside and tag not in answer.counts:
                    recorder.seen(stage, tag, now, copies=0)
        return new

    async def _pages(self, symbol: str, start_ms: int, end_ms: int) -> Answer:
        """Every record of the window, paging by time while answers come back full. An answer is full at
        ``limit`` records, or at a size no answer has exceeded that came back more than once: an API may
        cap pages below ``limit`` without saying so, and a cap shows as a recurring largest answer (the
        next page then tells)."""
        answer = Answer()
        paged: Cut | None = None  # the edge of the full answer the current page continues
        for _ in range(MAX_PAGES):
            records = await self._query(symbol, start_ms, end_ms)
            if records is None:
                answer.complete = False
                return answer
            times = [self._time(r) for r in records] if self._time is not None else [None] * len(records)
            if paged is not None and any(_past(when, paged) for when in times):
                # the API ignored the bound this page moved and answers as before: count the edge millisecond
                # the last page left, and ask no further (the same question would get the same answer)
                self._note_ignored(symbol)
                for record, when in zip(records, times, strict=True):
                    if when == paged.at:
                        self._add(answer, record)
                answer.complete = False
                return answer
            if paged is not None and paged.size < self.settings.limit and any(t != paged.at for t in times):
                self._note_cap(paged.size)  # a short answer that was not the whole window: a page cap
            if len(records) > self._largest_page:
                self._largest_page, self._largest_seen = len(records), 0
            self._largest_seen += len(records) == self._largest_page
            suspected_cap = self._largest_page if self._largest_seen > 1 else self.settings.limit
            full = bool(records) and len(records) >= min(self.settings.limit, suspected_cap)
            cut = _cut(times) if full else None
            if full and cut is None and len(records) >= self.settings.limit:
                self._page_problem(times)
                answer.complete = False
            for record, when in zip(records, times, strict=True):
                if cut is None or when != cut.at:  # the edge millisecond is counted on the next page, not twice
                    self._add(answer, record)
            if cut is None:
                return answer
            self._note_order(cut.newest_first)
            if cut.newest_first:
                end_ms = cut.at + 1
            else:
                start_ms = cut.at
            paged = cut
        answer.complete = False
        self.ctx.note(f"API window of {symbol} still full after {MAX_PAGES} pages: does it honour the time bounds?")
        return answer

    def _add(self, answer: Answer, record: dict[str, Any]) -> None:
        tag = self._tag(record)
        if tag is not None:
            answer.counts[tag] += 1
            answer.records.setdefault(tag, record)

    async def _query(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, Any]] | None:
        """One answer's records; None when the API failed (noted; the next poll tries again)."""
        url = self._url(symbol, start_ms, end_ms)
        try:
            response = await self._get(url)
            if response.status_code in (401, 403) and not self._answered:
                raise self._access_error(self.settings.base_url + url, response)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.ctx.note(f"API query failed: {type(exc).__name__}: {exc}")
            return None
        self._answered = True
        records = self._records(document)
        if not isinstance(records, list):
            raise ConfigError(
                f"{self._where}.records", self.settings.records,
                f"finds no list in the API's answer to {url}: {_quote(document)}",
                "set it to the JMESPath of the list of records",
            )  # fmt: skip
        if records and not self._checked:
            self._check_records(records)
        return [r for r in records if isinstance(r, dict)]

    async def _get(self, url: str) -> httpx.Response:
        """GET ``url``, timed; a 429 is waited out as its Retry-After says (else a growing backoff) and asked
        again."""
        backoff = RATE_LIMIT_BACKOFF
        for _ in range(RATE_LIMIT_RETRIES):
            response = await self._request(url)
            if response.status_code != 429:
                return response
            wait = min(retry_after(response.headers.get("Retry-After")) or backoff, RATE_LIMIT_MAX_WAIT)
            backoff = min(backoff * 2, RATE_LIMIT_MAX_WAIT)
            self._throttled += 1
            self._throttled_s += wait
            await asyncio.sleep(wait)
        return await self._request(url)

    async def _request(self, url: str) -> httpx.Response:
        """One GET, in its turn under ``max_request_rate``, timed and counted (its answer's bytes)."""
        await self._poll.request()
        try:
            response = await self.responses.timed(lambda: self._client.get(url))
        except httpx.HTTPError:
            self.ctx.load.add("requests")
            raise
        self.ctx.load.add("requests", len(response.content))
        return response

    def _access_error(self, url: str, response: httpx.Response) -> ConfigError:
        """The one-line error of a refused key: it names the headers setting, values masked."""
        headers = self.settings.headers
        what = "unauthorized" if response.status_code == 401 else "forbidden"
        problem = f"{url} answers HTTP {response.status_code} ({what})"
        if not headers:
            return ConfigError(
                f"{self._where}.headers", {}, f"{problem} and no header is set",
                'send the API key, e.g. headers = { X-API-Key = "${API_KEY}" }',
            )  # fmt: skip
        return ConfigError(
            f"{self._where}.headers", {name: MASK for name in headers}, problem,
            "check the key and the header name the API expects",
        )  # fmt: skip

    def _check_records(self, records: list[Any]) -> None:
        """The first non-empty answer proves ``tag_field`` (and ``time_field``) find something."""
        if all(self._tag(r) is None for r in records) and any(self._raw_tag(r) is not None for r in records):
            setting = "tag_pattern" if self.settings.tag_pattern is not None else "tag_regex"
            raise ConfigError(
                f"{self._where}.{setting}", self.settings.tag_pattern or self.settings.tag_regex or "",
                f"finds no tag in {self.settings.tag_field} of the API's records, e.g. {_quote(records[0])}",
                "match the id as the API writes it, with {tag} (or the regex group) where the number is",
            )  # fmt: skip
        for setting, getter, expression in (
            ("tag_field", self._raw_tag, self.settings.tag_field),
            ("time_field", self._time, self.settings.time_field),
        ):
            if getter is not None and all(getter(r) is None for r in records):
                raise ConfigError(
                    f"{self._where}.{setting}", expression,
                    f"finds nothing in the API's records, e.g. {_quote(records[0])}",
                    "set it to the JMESPath of the field in one record",
                )  # fmt: skip
        self._checked = True

    def _note_order(self, newest_first: bool) -> None:
        if not self._order_noted:
            self._order_noted = True
            order = "newest first" if newest_first else "oldest first"
            self.ctx.note(f"API answers {order}: paging by {self.settings.time_field}")

    def _note_cap(self, size: int) -> None:
        if not self._cap_noted:
            self._cap_noted = True
            self.ctx.note(f"API answers hold at most {size} records though limit={self.settings.limit}: paging by time")

    def _note_ignored(self, symbol: str) -> None:
        if not self._ignored_noted:
            self._ignored_noted = True
            self.ctx.note(
                f"API answers for {symbol} hold records past the end of the asked window: it does not honour the "
                "time bounds; each window is asked once more at most, and retractions are not judged from it"
            )

    def _page_problem(self, times: list[Any]) -> None:
        if any(not isinstance(t, int) for t in times):
            self.ctx.note(f"API {self.settings.time_field} is not epoch ms in every record: cannot page a full answer")
        elif len(set(times)) == 1:
            self.ctx.note(f"API page of {len(times)} records all at {times[0]} ms: raise {self._where}.limit")
        else:
            self.ctx.note(f"API answer is not ordered by {self.settings.time_field}: cannot page a full answer")

    def _ref(self, record: dict[str, Any]) -> Ref | None:
        if self._order is None:
            return None
        value = self._order(record)
        return Ref(-1, value) if isinstance(value, int) and not isinstance(value, bool) else None

    def _url(self, symbol: str, start_ms: int, end_ms: int) -> str:
        run = self.ctx.run
        return self.settings.query.format(
            symbol=symbol, start_ms=start_ms, end_ms=end_ms, limit=self.settings.limit, tag_lo=run.lo, tag_hi=run.hi
        )


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta seconds or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True, slots=True)
class Cut:
    """Where the next page starts: the edge millisecond of a full answer, and the answer's order."""

    at: int
    newest_first: bool
    size: int  # records in the answer


def _cut(times: list[Any]) -> Cut | None:
    """The page edge of a full, time-ordered answer; None when it cannot be paged (not ordered, not
    numbers, or a whole page in one millisecond)."""
    if len(times) < 2 or not all(isinstance(t, int) and not isinstance(t, bool) for t in times):
        return None
    descending = all(a >= b for a, b in pairwise(times))
    ascending = all(a <= b for a, b in pairwise(times))
    if times[0] == times[-1] or not (descending or ascending):
        return None
    return Cut(times[-1], newest_first=descending, size=len(times))


def _past(when: Any, paged: Cut) -> bool:
    """A record of the page after ``paged`` lies past the bound that page moved: an API ignoring it."""
    if not isinstance(when, int):
        return False
    return when > paged.at if paged.newest_first else when < paged.at


def _quote(document: Any) -> str:
    text = json.dumps(document, default=str)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"
