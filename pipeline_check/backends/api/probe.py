"""The ``api`` probe: asks the query API for the run's canaries, the way a user of the data would.

Each poll queries, per canary symbol, only the time window that still holds undelivered canaries (their
send times are known), and pages through it by the ``time_field`` until an answer holds nothing new.
Times may take any form (:mod:`pipeline_check.canary.time_forms`): epoch s/ms/µs/ns, float seconds,
ISO-8601 with an offset or naive in ``time_zone``, in answers and in the query's placeholders
(``{start_ms}``, ``{start_iso}``...; a window written in whole seconds is widened to whole seconds).
The API's order (newest or oldest first) and page cap (fewer records than ``limit``) are learnt from its
answers, not assumed, and noted. An answer capped below ``limit`` and not ordered by time cannot be paged:
its window is split in halves until each half answers below the cap; where that cannot be done (a cap
within one unit of time) the answer is incomplete and the stage's retractions and duplicates are
inconclusive. Records outside the window asked (an API that ignores a bound) are left out, and noted, so
paging ends where the window does. The poll interval adapts (``backends.polling``): ``poll_interval``
while the upstream stage holds canaries the API has not shown yet (they are due: a late look would read as
API latency) and during the settle window, ``idle_interval`` otherwise; ``max_request_rate`` caps the
requests.

Every request is timed (``responses``): the API's response times, judged by ``api.response`` thresholds.

Every answer's version of a canary is compared with what was sent (``fields``), and its time field with
its send time: a canary whose time moved is corrupted, naming the field. Copies of one canary within a
complete answer are duplicates; a canary shown before and missing from a later complete answer of its
window is gone (retracted), and back when a later answer shows it again. An answer that might have been cut
at a cap is read again page by page before anything is called gone. Without a ``time_field`` no canary can
be placed in a window, so retractions there are inconclusive. At the end, a last sweep covers the whole
run, and canaries still missing are searched ``search_window`` either side of their send time: one found
there is counted where it is, with the field that moved as a difference, not as lost. Canaries first found
by these last looks have no measured latency (the probe was not watching for them there).

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
from pipeline_check.canary.time_forms import (
    TIME_PLACEHOLDERS,
    Instant,
    check_zone,
    coarsest_unit_ms,
    covered,
    forms_in,
    placeholders,
    read_time,
    zone,
)
from pipeline_check.core.durations import Duration, NonNegativeDuration
from pipeline_check.core.errors import ConfigError, EndpointError
from pipeline_check.core.jsonpath import check_path, compile_path
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.core.redaction import MASK
from pipeline_check.verdict.response_times import ResponseTimes

MAX_PAGES = 1000  # per window: a guard against an API that ignores the time bounds
# the smallest page cap an API is taken to have: a few small answers of one size early in a run (the window
# holds one canary, then still one) are the window, not a cap
MIN_CAP = 10
RATE_LIMIT_RETRIES = 8  # 429s waited out per request before it counts as failed
RATE_LIMIT_BACKOFF = 0.5  # the first wait of a 429 without Retry-After, doubling
RATE_LIMIT_MAX_WAIT = 30.0
PLACEHOLDERS = ("symbol", "limit", "tag_lo", "tag_hi", *TIME_PLACEHOLDERS)
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
    # the canary's send time in any time form; windows, paging and retractions go by it
    time_field: Annotated[str, AfterValidator(check_path)] | None = "trade_time"
    time_zone: Annotated[str, AfterValidator(check_zone)] = "UTC"  # of naive ISO times, and {start_iso_naive}
    order_field: str | None = None  # a record field that orders records per key: ordering is judged on it
    limit: int = Field(default=1000, ge=1)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = 5.0
    search_window: NonNegativeDuration = 86_400.0  # either side of a missing canary's send time, at the end
    fields: Fields = Field(default_factory=dict)


@dataclass(slots=True)
class Answer:
    """A window's records as far as the API showed them: copies per tag, the first record of each, whether
    the answer holds the whole window, and whether it might have been cut at a cap nobody saw yet (a first
    page as large as any seen, not followed)."""

    counts: Counter[int] = field(default_factory=Counter)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    complete: bool = True
    first_size: int = 0
    unverified: bool = False

    def add(self, other: Answer) -> None:
        self.counts.update(other.counts)
        for tag, record in other.records.items():
            self.records.setdefault(tag, record)
        self.complete &= other.complete


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
        self._zone = zone(settings.time_zone)
        self._forms = forms_in(settings.query)
        self._unit = coarsest_unit_ms(self._forms)  # a window is asked in whole units of this (ms)
        headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
        self._client = httpx.AsyncClient(base_url=settings.base_url, headers=headers, timeout=settings.timeout)
        self._poll = PollPolicy.of(settings, ctx)
        self.responses = ResponseTimes()  # every request this probe makes (api.response thresholds)
        self._shown: dict[int, tuple[str, float | None]] = {}  # tag -> (symbol, record time ms) when last shown
        self._largest_page = 0  # the most records one answer held: the API's page cap, as far as seen
        self._largest_seen = 0  # answers of that size
        self._noted: set[str] = set()  # notes given once
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
        if self._time is None:
            self.ctx.recorder.cannot_observe(
                self.ctx.stage, "retracted",
                f"has no time_field: a canary cannot be placed in a window, so one missing from an answer "
                f"cannot be told gone (set {self._where}.time_field)",
            )  # fmt: skip

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
        missing canaries either side of their window, then close the client. Canaries first found here get
        no latency: the probe was not watching for them when they arrived."""
        try:
            ctx = self.ctx
            if not self._settle_swept:  # every window at once: the time to verdict waits for the slowest
                windows = ctx.recorder.run_windows_ms()
                sweeps = (self._sweep(s, first, last + 1, timed=False) for s, (first, last) in windows.items())
                await asyncio.gather(*sweeps)
            wide = int(self.settings.search_window * 1000)
            if wide and self._time is not None:
                for symbol, (first, last) in ctx.recorder.pending_windows_ms(ctx.stage).items():
                    found = await self._sweep(symbol, max(0, first - wide), last + 1 + wide, timed=False)
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

    async def _sweep(self, symbol: str, start_ms: int, end_ms: int, *, timed: bool = True) -> int:
        """Query ``[start_ms, end_ms)`` page by page; tell the recorder what it holds (every version, where
        each canary sits in time, what is gone); return how many canaries are new. ``timed`` False: a last
        look, whose first sightings have no arrival time."""
        answer = await self._pages(symbol, start_ms, end_ms, self._page_cap())
        lo, hi = covered(start_ms, end_ms, self._unit)  # the window the API was really asked
        if answer.complete and answer.unverified and self._gone(symbol, answer, lo, hi):
            # something seems gone from an answer that may have been cut at a cap not seen before: read the
            # window again with that answer's size as the cap (paged, or split) before believing it
            answer = await self._pages(symbol, start_ms, end_ms, answer.first_size, learn=False)
        now = self.ctx.clock.now()
        if timed:
            self._poll.looked(now)
        recorder, stage, fields = self.ctx.recorder, self.ctx.stage, self.settings.fields
        new = 0
        for tag, copies in answer.counts.items():
            record = answer.records[tag]
            raw = self._time(record) if self._time is not None else None
            instant = self._instant(raw)
            self._shown[tag] = (symbol, None if instant is None else instant.ms)
            if recorder.seen(stage, tag, now, copies=copies, ref=self._ref(record), timed=timed):
                new += 1
            if fields:
                recorder.diff(stage, tag, record, fields, at=now)
            if instant is not None and self.settings.time_field is not None:
                recorder.placed_at(stage, tag, self.settings.time_field, instant, repr(raw))
        if answer.complete:
            for tag in self._gone(symbol, answer, lo, hi):
                recorder.seen(stage, tag, now, copies=0)
        return new

    def _gone(self, symbol: str, answer: Answer, lo: int, hi: int) -> list[int]:
        """Tags shown before, placed inside ``[lo, hi)``, that ``answer`` does not hold."""
        return [
            tag
            for tag, (shown_symbol, when) in self._shown.items()
            if shown_symbol == symbol and when is not None and lo <= when < hi and tag not in answer.counts
        ]

    def _page_cap(self) -> int:
        """How many records make an answer full: ``limit``, or a smaller size that came back more than once
        as the largest (an API may cap pages below ``limit`` without saying so)."""
        suspected = (
            self._largest_page if self._largest_seen > 1 and self._largest_page >= MIN_CAP else self.settings.limit
        )
        return min(self.settings.limit, suspected)

    async def _pages(
        self, symbol: str, start_ms: int, end_ms: int, cap: int, budget: list[int] | None = None, *, learn: bool = True
    ) -> Answer:
        """Every record of the window, paging by time while answers come back full (``cap`` records or
        more). A full answer not ordered by time is split in halves instead. ``budget``: the requests left
        for this window (``MAX_PAGES``: a guard against an API that ignores the time bounds). ``learn``
        False: a second reading, which says nothing new of the API's page cap."""
        budget = [MAX_PAGES] if budget is None else budget
        answer = Answer()
        paged: Cut | None = None  # the edge of the full answer the current page continues
        while budget[0] > 0:
            budget[0] -= 1
            records = await self._query(symbol, start_ms, end_ms)
            if records is None:
                answer.complete = False
                return answer
            lo, hi = covered(start_ms, end_ms, self._unit)
            times = self._times(records)
            inside = [t is None or lo <= t < hi for t in times]
            if not all(inside):
                self._note_once(
                    "outside",
                    f"API answers hold records outside the window asked ({self.settings.time_field} not in "
                    f"[{lo}, {hi}) ms): it does not honour a time bound; such records are left out of the window",
                )
                times = [t for t, keep in zip(times, inside, strict=True) if keep]
                records = [r for r, keep in zip(records, inside, strict=True) if keep]
            if paged is None:
                answer.first_size = len(records)
                size = len(records)
                answer.unverified = MIN_CAP <= size < self.settings.limit and size >= self._largest_page
            if paged is not None and paged.size < self.settings.limit and any(t != paged.at for t in times):
                self._note_cap(paged.size)  # a short answer that was not the whole window: a page cap
            if learn and len(records) > self._largest_page:
                self._largest_page, self._largest_seen = len(records), 0
            self._largest_seen += learn and len(records) == self._largest_page
            full = bool(records) and len(records) >= cap
            cut = _cut(times, self._unit) if full else None
            if full and cut is None:
                answer.unverified = False
                if not _ordered(times):
                    answer.add(await self._split(symbol, start_ms, end_ms, len(records), budget, learn))
                    return answer
                self._cannot_page(self._page_problem(times))
                answer.complete = False
            for record, when in zip(records, times, strict=True):
                if cut is not None and when is not None and _unit_floor(when, self._unit) == cut.at:
                    continue  # the edge unit is counted on the next page, not twice
                tag = self._tag(record)
                if tag is not None:
                    answer.counts[tag] += 1
                    answer.records.setdefault(tag, record)
            if cut is None:
                return answer
            answer.unverified = False
            self._note_order(cut.newest_first)
            if cut.newest_first:
                end_ms = cut.at + int(self._unit)
            else:
                start_ms = cut.at
            paged = cut
        answer.complete = False
        self._cannot_page(
            f"a window of {symbol} was still full after {MAX_PAGES} requests: does it honour the time bounds?"
        )
        return answer

    async def _split(
        self, symbol: str, start_ms: int, end_ms: int, size: int, budget: list[int], learn: bool
    ) -> Answer:
        """A full answer not ordered by time: the window in halves, each read on its own."""
        self._note_once(
            "unordered",
            f"API answers hold at most {size} records (limit={self.settings.limit}) and are not ordered by "
            f"{self.settings.time_field}: they cannot be paged, so windows are split in halves",
        )
        lo, hi = covered(start_ms, end_ms, self._unit)
        if hi - lo <= self._unit:
            self._cannot_page(
                f"answers {size} records for one {self._unit:g} ms of {self.settings.time_field}, not ordered by "
                "it: what is missing from such an answer cannot be told (raise limit, or order answers by time)"
            )
            return Answer(complete=False)
        middle = lo + (hi - lo) // 2 // int(self._unit) * int(self._unit)
        answer = Answer()
        for first, last in ((lo, middle), (middle, hi)):
            answer.add(await self._pages(symbol, first, last, size, budget, learn=learn))
        return answer

    def _times(self, records: list[dict[str, Any]]) -> list[float | None]:
        """Each record's time (epoch ms), None where there is no readable one."""
        if self._time is None:
            return [None] * len(records)
        instants = [self._instant(self._time(record)) for record in records]
        return [None if instant is None else instant.ms for instant in instants]

    def _instant(self, raw: object) -> Instant | None:
        if raw is None:
            return None
        instant = read_time(raw, self._zone)
        if instant is None:
            why = (
                f"time_field {self.settings.time_field} holds {raw!r}, which is no time form pipeline-check reads "
                "(epoch s/ms/us/ns, float seconds, ISO-8601): canaries cannot be placed in windows"
            )
            self._note_once("unreadable", f"API {why}")
            self.ctx.recorder.cannot_observe(self.ctx.stage, "retracted", why)
        return instant

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

    def _note_once(self, key: str, message: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.ctx.note(message)

    def _note_order(self, newest_first: bool) -> None:
        order = "newest first" if newest_first else "oldest first"
        self._note_once("order", f"API answers {order}: paging by {self.settings.time_field}")

    def _note_cap(self, size: int) -> None:
        self._note_once(
            "cap", f"API answers hold at most {size} records though limit={self.settings.limit}: paging by time"
        )

    def _page_problem(self, times: list[Any]) -> str:
        if any(t is None for t in times):
            return f"{self.settings.time_field} is not a time in every record: a full answer cannot be paged"
        return f"answers a page of {len(times)} records all within one {self._unit:g} ms: raise {self._where}.limit"

    def _cannot_page(self, why: str) -> None:
        """A full answer this API gives cannot be read whole: what is missing from it, or doubled in it, cannot
        be told, so the stage's retractions and duplicates are inconclusive."""
        self._note_once(why, f"API {why}")
        for what in ("retracted", "duplicates"):
            self.ctx.recorder.cannot_observe(self.ctx.stage, what, why)

    def _ref(self, record: dict[str, Any]) -> Ref | None:
        """Where the order field places the record: an integer, or a time (in microseconds)."""
        if self._order is None:
            return None
        value = self._order(record)
        if isinstance(value, int) and not isinstance(value, bool):
            return Ref(-1, value)
        instant = read_time(value, self._zone) if value is not None else None
        return None if instant is None else Ref(-1, round(instant.ms * 1000))

    def _url(self, symbol: str, start_ms: int, end_ms: int) -> str:
        run = self.ctx.run
        return self.settings.query.format(
            symbol=symbol,
            limit=self.settings.limit,
            tag_lo=run.lo,
            tag_hi=run.hi,
            **placeholders(start_ms, end_ms, self._forms, self._zone),
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
    """Where the next page starts: the unit (ms, or whole seconds for a window asked in seconds) of the edge
    of a full answer, and the answer's order."""

    at: int
    newest_first: bool
    size: int  # records in the answer


def _unit_floor(ms: float, unit: float) -> int:
    step = max(1, int(unit))
    return int(ms // step * step)


def _ordered(times: list[float | None]) -> bool:
    """Whether every record has a time and they run one way (a whole page at one time counts as ordered)."""
    known = [t for t in times if t is not None]
    if len(known) < len(times):
        return False
    return all(a >= b for a, b in pairwise(known)) or all(a <= b for a, b in pairwise(known))


def _cut(times: list[float | None], unit: float) -> Cut | None:
    """The page edge of a full, time-ordered answer; None when it cannot be paged (not ordered, not all
    times, or a whole page within one unit of time)."""
    if len(times) < 2 or not _ordered(times):
        return None
    edges = [_unit_floor(t, unit) for t in times if t is not None]
    first, last = edges[0], edges[-1]
    if first == last:
        return None
    return Cut(last, newest_first=first > last, size=len(times))


def _quote(document: Any) -> str:
    text = json.dumps(document, default=str)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"
