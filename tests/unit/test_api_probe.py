"""The API probe learns an API's semantics from its answers: order, page cap, copies, retractions, and
settings that find nothing. Against a small HTTP server of the test's own (real HTTP, in-process data)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from services.api_time import TimeForm, TimeFormat

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
    # the time form of answers and of start_time/end_time: the reference API's own (services.api_time)
    form: TimeForm = TimeForm.MS
    by_price: bool = False  # answers ordered by price, highest first, not by time


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
            form = TimeFormat(behaviour.form)
            start, end, limit = form.parse(q["start_time"]) // 1000, form.parse(q["end_time"]) // 1000, int(q["limit"])
            inside = [r for r in behaviour.records if r["symbol"] == q["symbol"] and start <= r["trade_time"]]
            rows = [r for r in inside if behaviour.ignore_end or r["trade_time"] < end]
            if behaviour.by_price:
                rows.sort(key=lambda r: (Decimal(r["price"]), r["trade_id"]), reverse=True)
            else:
                rows.sort(key=lambda r: (r["trade_time"], r["trade_id"]), reverse=not behaviour.oldest_first)
            shown = [r | {"trade_time": form.render(r["trade_time"] * 1000)} for r in rows]
            self._send({behaviour.key: shown[: min(limit, behaviour.cap or limit)]})

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


def book_of(count: int, apart: float = 0.01) -> TraceBook:
    factory = TradeFactory(RUN, seed=3, count=count, symbols=("CANARYUSDT",))
    book = TraceBook(RUN, factory, route_of(("api",)), Clock())
    for seq in range(count):
        book.inject(seq, 100.0 + seq * apart)  # 10 ms apart by default: distinct milliseconds
    return book


def rows_of(book: TraceBook, seqs: range | list[int], shift_ms: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "symbol": "CANARYUSDT",
            "trade_id": RUN.tag(s),
            "trade_time": int(book.sent_ms[s]) + shift_ms,
            "price": f"{(s * 7919) % 100}.5",  # prices in no order of time
        }
        for s in seqs
    ]


def sweep(url: str, book: TraceBook, notes: list[str], between: Any = None, looks: int = 1, **settings: Any) -> None:
    """One probe's start, ``looks`` looks at the run's windows, ``between()``, another look, and its last
    pass (which looks at the whole run again)."""
    probe = ApiProbe(
        ApiSettings(base_url=url, **settings),
        ProbeContext("api", "source", book.clock, RUN, book, notes.append),
    )

    async def go() -> None:
        await probe.start()
        try:
            for _ in range(looks):
                for symbol, (first, last) in book.run_windows_ms().items():
                    await probe._sweep(symbol, first, last + 1)
            if between is not None:
                between()
                for symbol, (first, last) in book.run_windows_ms().items():
                    await probe._sweep(symbol, first, last + 1)
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
    behaviour.records, behaviour.cap = rows_of(book, range(30)), 12
    notes: list[str] = []
    sweep(url, book, notes, limit=1000)
    assert book.reached("api") == 30, notes
    assert any("answers hold at most 12 records though limit=1000" in n for n in notes), notes


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
    assert any("outside the window asked" in n and "does not honour a time bound" in n for n in notes), notes
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


# -- time forms, capped answers in another order, bounds the API ignores, moved times ---------------------

QUERY = "/v1/trades?symbol={{symbol}}&start_time={{start_{form}}}&end_time={{end_{form}}}&limit={{limit}}"


@pytest.mark.parametrize("form", list(TimeForm))
def test_every_time_form_pages_and_shows_what_is_gone(api: tuple[str, Behaviour], form: TimeForm) -> None:
    url, behaviour = api
    book = book_of(25, apart=0.45)  # pages of 4 span more than a second: whole seconds still have an edge
    behaviour.records, behaviour.form = rows_of(book, range(25)), form
    notes: list[str] = []

    def delete_3() -> None:
        behaviour.records = rows_of(book, [s for s in range(25) if s != 3])

    sweep(url, book, notes, between=delete_3, limit=4, query=QUERY.format(form=form.value))
    assert book.reached("api") == 25, notes
    assert (book.copies("api") == 1).all()  # every page edge counted once, in every form
    gone, _, _ = book.retractions("api")
    assert gone.tolist() == [1 if s == 3 else 0 for s in range(25)], notes
    assert not book.diffs  # every time read back as the send time it holds, at its form's precision


def test_without_a_time_field_retractions_cannot_be_observed(api: tuple[str, Behaviour]) -> None:
    url, behaviour = api
    book = book_of(5)
    behaviour.records = rows_of(book, range(5))
    sweep(url, book, [], time_field=None)
    assert book.reached("api") == 5
    assert "has no time_field" in book.unobservable["api"]["retracted"]


def test_capped_answers_not_ordered_by_time_are_split_not_trusted(api: tuple[str, Behaviour]) -> None:
    url, behaviour = api
    book = book_of(60)
    behaviour.records, behaviour.cap, behaviour.by_price = rows_of(book, range(60)), 12, True
    notes: list[str] = []
    # three looks (the cap shows as a recurring largest answer), then the last sweep
    probe_looks = 3
    sweep(url, book, notes, looks=probe_looks, limit=1000)
    assert book.reached("api") == 60, notes
    assert not book.retractions("api")[0].any(), "a truncated page read as complete"
    assert any("not ordered by trade_time: they cannot be paged, so windows are split" in n for n in notes), notes
    assert "api" not in book.unobservable


def test_a_cap_within_one_unit_of_time_makes_retractions_and_duplicates_inconclusive(
    api: tuple[str, Behaviour],
) -> None:
    url, behaviour = api
    book = book_of(30, apart=0.00001)  # thirty canaries within one millisecond
    behaviour.records, behaviour.cap, behaviour.by_price = rows_of(book, range(30)), 12, True
    sweep(url, book, [], looks=3, limit=1000)
    cannot = book.unobservable["api"]
    assert set(cannot) == {"retracted", "duplicates"} and "all within one 1 ms" in cannot["retracted"]
    assert book.reached("api") < 30  # what a capped answer leaves out cannot be read at all


def test_records_outside_the_window_asked_are_left_out(api: tuple[str, Behaviour]) -> None:
    url, behaviour = api
    book = book_of(10)
    behaviour.records, behaviour.ignore_end = rows_of(book, range(10)), True
    notes: list[str] = []
    probe = ApiProbe(ApiSettings(base_url=url), ProbeContext("api", "source", book.clock, RUN, book, notes.append))

    async def go() -> None:
        await probe.start()
        try:
            await probe._sweep("CANARYUSDT", int(book.sent_ms[0]), int(book.sent_ms[4]) + 1)  # the first five
        finally:
            await probe._client.aclose()

    asyncio.run(go())
    assert book.reached("api") == 5  # the five after end_time are not this window's
    assert any("does not honour a time bound" in n for n in notes), notes


def test_a_moved_time_is_corrupted_and_its_latency_unmeasured(api: tuple[str, Behaviour]) -> None:
    url, behaviour = api
    book = book_of(5)
    behaviour.records = rows_of(book, range(5), shift_ms=2000)  # every time 2 s late
    notes: list[str] = []
    sweep(url, book, notes)
    assert book.reached("api") == 5
    assert {(d.stage, d.field) for d in book.diffs[0]} == {("api", "trade_time")}
    assert book.untimed("api").all()  # found where the probe was not looking for them
    assert any("found outside their send-time window" in n for n in notes), notes
