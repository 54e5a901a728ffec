"""The ``api`` probe: asks the query API for the run's canaries, the way a user of the data would.

Each poll queries only the time window that still holds undelivered canaries (their send times are
known), newest first, paging down when a page comes back full. The poll interval adapts: short while
canaries keep arriving or the upstream stage holds some the API has not shown yet (they are due: a
late look would read as API latency), growing to ``max_poll_interval`` otherwise. Copies of one
canary within a response are duplicates; a last sweep over the whole run window at the end counts
late ones too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

import httpx

from pipeline_check.clock import Clock
from pipeline_check.config import ApiStage, PipelineConfig
from pipeline_check.errors import EndpointError
from pipeline_check.events import NoteBuffer
from pipeline_check.jsonpath import compile_path
from pipeline_check.probes.base import PROBES
from pipeline_check.probes.resolution import LookTimes
from pipeline_check.trace import SOURCE, TraceBook

MAX_PAGES = 1000  # per window: a guard against an API that ignores the time bounds


@PROBES.register("api")
class ApiProbe(NoteBuffer):
    stage: ClassVar[str] = "api"

    def __init__(self, config: PipelineConfig, clock: Clock, book: TraceBook) -> None:
        super().__init__()
        assert config.stages.api is not None
        self.settings: ApiStage = config.stages.api
        self.symbol = config.messages.symbol
        self.clock = clock
        self.book = book
        self._records = compile_path("stages.api.records", self.settings.records)
        self._tag = compile_path("stages.api.tag_field", self.settings.tag_field)
        self._time = compile_path("stages.api.time_field", self.settings.time_field or "")
        headers = {k: v.get_secret_value() for k, v in self.settings.headers.items()}
        self._client = httpx.AsyncClient(
            base_url=self.settings.base_url, headers=headers, timeout=self.settings.timeout
        )
        self._looks = LookTimes()
        self.requests = 0

    async def start(self) -> None:
        path = self.settings.health or self._url(0, 1)
        try:
            response = await self._client.get(path)
        except httpx.HTTPError as exc:
            await self._client.aclose()
            raise EndpointError(
                "stages.api.base_url", self.settings.base_url + path, f"does not answer ({type(exc).__name__})",
                "is the API running and the address right?",
            ) from None  # fmt: skip
        if response.status_code >= 400:
            await self._client.aclose()
            raise EndpointError(
                "stages.api.base_url", self.settings.base_url + path, f"answers HTTP {response.status_code}",
                "is the service healthy? (stages.api.health names the path checked)",
            ) from None  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        interval = settings.poll_interval
        upstream = self.book.upstream("api")
        while not stop.is_set():
            pending = self.book.pending("api")
            new = 0
            if len(pending):
                sent = self.book.sent_ms[pending]
                new = await self._sweep(int(sent.min()), int(sent.max()) + 1)
            due = upstream != SOURCE and self.book.reached(upstream) > self.book.reached("api")
            interval = settings.poll_interval if new or due else min(settings.max_poll_interval, interval * 1.5)
            await asyncio.sleep(interval)

    async def finish(self) -> None:
        """Sweep the whole run window once more to count every copy, then close the client."""
        try:
            sent = self.book.sent_ms[: self.book.injected]
            if len(sent):
                await self._sweep(int(sent.min()), int(sent.max()) + 1)
        finally:
            await self._client.aclose()

    @property
    def resolution(self) -> float:
        return self._looks.median

    async def _sweep(self, start_ms: int, end_ms: int) -> int:
        """Query ``[start_ms, end_ms)`` page by page; record what it holds; return how many are new."""
        limit = self.settings.limit
        counts: Counter[int] = Counter()
        first_records: dict[int, dict[str, Any]] = {}
        for _ in range(MAX_PAGES):
            records = await self._query(start_ms, end_ms)
            full = len(records) >= limit and self.settings.time_field is not None
            cut = None
            if full:
                # newest first and full: the oldest millisecond may continue on the next page, so
                # count it there (end is exclusive) instead of twice
                times = [int(self._time(r)) for r in records]
                cut = min(times)
                if cut + 1 >= end_ms:  # a whole page in one millisecond: cannot page further
                    self.note(f"API page of {limit} records all at {cut} ms: raise stages.api.limit")
                    cut = None
                records = [r for r, t in zip(records, times, strict=True) if cut is None or t > cut]
            for record in records:
                seq = self.book.seq_of(self._tag(record))
                if seq is not None:
                    counts[seq] += 1
                    first_records.setdefault(seq, record)
            if cut is None:
                break
            end_ms = cut + 1
        now = self.clock.now()
        self._looks.look(now)
        fresh = [seq for seq in counts if not self.book.has_seen("api", seq)]
        self.book.seen_in_view("api", counts, now)
        if self.settings.fields:
            for seq in fresh:
                self.book.diff("api", seq, first_records[seq], self.settings.fields)
        return len(fresh)

    async def _query(self, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        url = self._url(start_ms, end_ms)
        self.requests += 1
        try:
            response = await self._client.get(url)
            response.raise_for_status()
            records = self._records(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            self.note(f"API query failed: {type(exc).__name__}: {exc}")
            return []
        return records if isinstance(records, list) else []

    def _url(self, start_ms: int, end_ms: int) -> str:
        run = self.book.run
        return self.settings.query.format(
            symbol=self.symbol,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=self.settings.limit,
            tag_lo=run.lo,
            tag_hi=run.hi,
        )
