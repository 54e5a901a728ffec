"""The API probe learns an API's semantics from its answers: order, page cap, copies, retractions, and
settings that find nothing. Against a small HTTP server of the test's own (real HTTP, in-process data)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from pipeline_check.backends.api.probe import ApiProbe, ApiSettings
from pipeline_check.backends.polling import Pace
from pipeline_check.backends.probe import ProbeContext
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError
from pipeline_check.trace.book import TraceBook
from tests.unit.conftest import route_of

RUN = RunId(31337)


@dataclass
class Behaviour:
    """How the test API answers."""

    records: list[dict[str, Any]] = field(default_factory=list)
    oldest_first: bool = False
    cap: int | None = None  # answers hold at most this many records, whatever `limit` says
    key: str = "data"
    ignore_end: bool = False  # answers hold everything from start_time on, as an API that ignores end_time
    requests: int = 0


@pytest.fixture
def api() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/health":
                self._send({"status": "ok"})
                return
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            behaviour.requests += 1
            start, end, limit = int(q["start_time"]), int(q["end_time"]), int(q["limit"])
            end = 2**63 if behaviour.ignore_end else end
            rows = [r for r in behaviour.records if r["symbol"] == q["symbol"] and start <= r["trade_time"] < end]
            rows.sort(key=lambda r: (r["trade_time"], r["trade_id"]), reverse=not behaviour.oldest_first)
            self._send({behaviour.key: rows[: min(limit, behaviour.cap or limit)]})

        def _send(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", behaviour
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def book_of(count: int) -> TraceBook:
    factory = TradeFactory(RUN, seed=3, count=count, symbols=("CANARYUSDT",))
    book = TraceBook(RUN, factory, route_of(("api",)), Clock())
    for seq in range(count):
        book.inject(seq, 100.0 + seq * 0.01)  # 10 ms apart: distinct milliseconds
    return book


def rows_of(book: TraceBook, seqs: range | list[int]) -> list[dict[str, Any]]:
    return [
        {"symbol": "CANARYUSDT", "trade_id": RUN.tag(s), "trade_time": int(book.sent_ms[s]), "price": "1.0"}
        for s in seqs
    ]


def sweep(url: str, book: TraceBook, notes: list[str], between: Any = None, **settings: Any) -> None:
    """One probe's start, one look at the pending windows, ``between()``, and its last pass (which looks
    at the whole run again)."""
    probe = ApiProbe(
        ApiSettings(base_url=url, **settings),
        ProbeContext("api", "source", book.clock, RUN, book, notes.append),
    )

    async def go() -> None:
        await probe.start()
        try:
            for symbol, (first, last) in book.pending_windows_ms("api").items():
                await probe._sweep(symbol, first, last + 1)
            if between is not None:
                between()
        finally:
            await probe.finish()

    asyncio.run(go())


@pytest.mark.parametrize("oldest_first", [False, True])
def test_full_pages_are_followed_in_either_order(api: tuple[str, Behaviour], oldest_first: bool) -> None:
    url, behaviour = api
    book = book_of(25)
    behaviour.records, behaviour.oldest_first = rows_of(book, range(25)), oldest_first
    notes: list[str] = []
    sweep(url, book, notes, limit=10)
    assert book.reached("api") == 25
    assert (book.copies("api") == 1).all()  # the page edge's millisecond is counted once
    order = "oldest first" if oldest_first else "newest first"
    assert f"API answers {order}: paging by trade_time" in notes


def test_a_page_cap_below_the_limit_is_found_and_paged_through(api: tuple[str, Behaviour]) -> None:
    url, behaviour = api
    book = book_of(30)
    behaviour.records, behaviour.cap = rows_of(book, range(30)), 7
    notes: list[str] = []
    sweep(url, book, notes, limit=1000)
    assert book.reached("api") == 30, notes
    assert any("answers hold at most 7 records though limit=1000" in n for n in notes), notes


def test_copies_in_one_answer_are_duplicates_and_a_row_gone_is_retracted(api: tuple[str, Behaviour]) -> None:
    url, behaviour = api
    book = book_of(5)
    behaviour.records = rows_of(book, [0, 1, 1, 2, 3, 4])

    def delete_3() -> None:
        behaviour.records = rows_of(book, [0, 1, 2, 4])

    sweep(url, book, [], between=delete_3)
    assert book.copies("api").tolist() == [1, 2, 1, 1, 1]
    assert book.live("api").tolist() == [1, 1, 1, 0, 1]  # seen, then gone from a complete answer


def test_an_api_that_ignores_the_end_of_the_window_is_asked_once_more_not_a_thousand_times(
    api: tuple[str, Behaviour],
) -> None:
    url, behaviour = api
    book = book_of(25)
    behaviour.records, behaviour.ignore_end = rows_of(book, range(25)), True
    notes: list[str] = []
    sweep(url, book, notes, limit=10)
    # health, then each of three sweeps (the pending windows, the last pass's run window and its wide search for
    # the canaries still missing): a full first page and a second that repeats it
    assert behaviour.requests == 6, behaviour.requests
    assert any("past the end of the asked window: it does not honour the time bounds" in n for n in notes), notes
    assert book.reached("api") == 10  # the newest page, its edge millisecond counted once
    seen = book.copies("api")
    assert set(seen[seen > 0].tolist()) == {1}  # a repeated page is never counted as copies


@pytest.mark.parametrize("settled", [True, False])
def test_the_last_pass_is_the_sweep_made_while_the_run_settled(api: tuple[str, Behaviour], settled: bool) -> None:
    url, behaviour = api
    book = book_of(5)
    behaviour.records = rows_of(book, range(5))
    pace = Pace(lambda stage: 0, settling=settled, poll_interval=0.05)
    probe = ApiProbe(
        ApiSettings(base_url=url), ProbeContext("api", "source", book.clock, RUN, book, [].append, pace=pace)
    )

    async def go() -> tuple[int, int]:
        await probe.start()
        stop = asyncio.Event()
        task = asyncio.create_task(probe.run(stop))
        while book.reached("api") < 5:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        stop.set()
        await task
        before = behaviour.requests
        await probe.finish()
        return before, behaviour.requests

    before, after = asyncio.run(go())
    assert (after == before) if settled else (after > before), (before, after)  # no sweep after a settle one


@pytest.mark.parametrize(
    ("settings", "setting", "shown"),
    [
        ({"records": "dat"}, "stages.api.records='dat'", "finds no list"),
        ({"tag_field": "id"}, "stages.api.tag_field='id'", "finds nothing"),
    ],
)
def test_settings_that_find_nothing_stop_the_run_at_the_first_answer(
    api: tuple[str, Behaviour], settings: dict[str, str], setting: str, shown: str
) -> None:
    url, behaviour = api
    book = book_of(3)
    behaviour.records = rows_of(book, range(3))
    with pytest.raises(ConfigError) as exc:
        sweep(url, book, [], **settings)
    message = str(exc.value)
    assert message.startswith(setting) and shown in message
    assert "CANARYUSDT" in message or "data" in message  # one record (or the answer) is shown
