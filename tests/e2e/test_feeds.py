"""``FeedServer`` on a free port against real ``websockets`` clients: Binance raw and combined streams,
live subscriptions, errors, routing, pings, connection age, ``wss://`` and Kraken v2."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from pipeline_check.backends.websocket import tls
from pipeline_check.backends.websocket.binance import BinanceDialect
from pipeline_check.backends.websocket.dialect import Dialect
from pipeline_check.backends.websocket.kraken import KrakenDialect
from pipeline_check.backends.websocket.routing import SymbolSpreader
from pipeline_check.backends.websocket.server import FeedServer
from pipeline_check.canary.trades import Trade

pytestmark = pytest.mark.e2e

DEADLINE = 10.0  # generous: the machine is shared; no test waits this long when things work


def trade(symbol: str, trade_id: int, *, maker: bool = False) -> Trade:
    return Trade(symbol, trade_id, "65000.10000000", "0.00100000", maker, 1_750_000_000_000 + trade_id)


@contextlib.asynccontextmanager
async def serving(dialect: Dialect | None = None, **options: Any) -> AsyncIterator[FeedServer]:
    server = FeedServer(dialect or BinanceDialect(), **options)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def message(ws: ClientConnection) -> Any:
    async with asyncio.timeout(DEADLINE):
        return json.loads(await ws.recv())


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_raw_stream_gets_its_symbol_only():
    async def scenario() -> None:
        async with serving() as feed, connect(feed.url("/ws/btcusdt@trade")) as ws:
            await feed.wait_subscribed(1, DEADLINE)
            assert await feed.publish(trade("ETHUSDT", 1)) == 0
            assert await feed.publish(trade("BTCUSDT", 2)) == 1
            got = await message(ws)
            assert (got["e"], got["s"], got["t"], got["p"]) == ("trade", "BTCUSDT", 2, "65000.10000000")

    run(scenario)


def test_raw_path_with_several_streams():
    async def scenario() -> None:
        async with serving() as feed, connect(feed.url("/ws/btcusdt@trade/ethusdt@aggTrade")) as ws:
            await feed.wait_subscribed(1, DEADLINE)
            await feed.publish(trade("ETHUSDT", 3))
            await feed.publish(trade("BTCUSDT", 4))
            agg, raw = await message(ws), await message(ws)
            assert (agg["e"], agg["a"], agg["f"], agg["l"]) == ("aggTrade", 3, 3, 3)
            assert (raw["e"], raw["t"]) == ("trade", 4)

    run(scenario)


def test_combined_stream_wraps_payloads_and_raw_does_not():
    async def scenario() -> None:
        async with (
            serving() as feed,
            connect(feed.url("/stream?streams=btcusdt@trade/ethusdt@trade")) as combined,
            connect(feed.url("/ws/ethusdt@trade")) as raw,
        ):
            await feed.wait_subscribed(2, DEADLINE)
            assert await feed.publish(trade("ETHUSDT", 5)) == 2
            wrapped = await message(combined)
            assert wrapped["stream"] == "ethusdt@trade"
            assert (wrapped["data"]["s"], wrapped["data"]["t"]) == ("ETHUSDT", 5)
            assert await message(raw) == wrapped["data"]

    run(scenario)


def test_live_subscribe_list_and_unsubscribe():
    async def scenario() -> None:
        async with serving() as feed, connect(feed.url("/ws")) as ws:
            assert await feed.publish(trade("BTCUSDT", 1)) == 0
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@depth"], "id": 1}))
            assert await message(ws) == {"result": None, "id": 1}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
            assert await message(ws) == {"result": ["btcusdt@trade", "btcusdt@depth"], "id": 3}
            assert await feed.publish(trade("BTCUSDT", 2)) == 1
            assert (await message(ws))["t"] == 2
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 312}))
            assert await message(ws) == {"result": None, "id": 312}
            assert await feed.publish(trade("BTCUSDT", 3)) == 0
            assert feed.subscribed_symbols() == frozenset()

    run(scenario)


def test_errors_come_back_on_the_connection():
    async def scenario() -> None:
        async with serving() as feed, connect(feed.url("/ws")) as ws:
            await ws.send('{"method": "SUBSCRIBE", "params": [')
            assert (await message(ws))["error"]["code"] == 3
            await ws.send(json.dumps({"method": "PING", "id": 9}))
            reply = await message(ws)
            assert reply["id"] == 9 and reply["error"]["code"] == 2
            assert reply["error"]["msg"].startswith("Invalid request: unknown variant `PING`")
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["BTC USDT"], "id": 10}))
            assert await message(ws) == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 10}

    run(scenario)


def test_a_path_not_served_is_refused_at_the_handshake():
    async def scenario() -> None:
        async with serving() as feed:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(feed.url("/v2")):
                    pass
            assert refused.value.response.status_code == 404
            assert b"/ws/<symbol>@trade" in refused.value.response.body

    run(scenario)


def test_a_client_following_ethusdt_never_receives_btcusdt():
    async def until(ws: ClientConnection, last: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while not got or got[-1]["t"] != last:
            got.append(await message(ws))
        return got

    async def scenario() -> None:
        async with (
            serving() as feed,
            connect(feed.url("/ws/ethusdt@trade")) as eth,
            connect(feed.url("/ws/btcusdt@trade")) as btc,
        ):
            await feed.wait_subscribed(2, DEADLINE)
            delivered = [await feed.publish(trade(("BTCUSDT", "ETHUSDT")[i % 2], i)) for i in range(40)]
            assert delivered == [1] * 40
            eth_got, btc_got = await until(eth, 39), await until(btc, 38)
            assert {g["s"] for g in eth_got} == {"ETHUSDT"}
            assert [g["t"] for g in eth_got] == list(range(1, 40, 2))
            assert {g["s"] for g in btc_got} == {"BTCUSDT"}
            assert [g["t"] for g in btc_got] == list(range(0, 40, 2))

    run(scenario)


def test_subscriptions_name_each_connection_and_what_it_asked_for():
    async def scenario() -> None:
        async with serving() as feed, connect(feed.url("/stream?streams=ethusdt@trade")) as ws:
            (sub,) = await feed.wait_subscribed(1, DEADLINE)
            host, port = ws.local_address[:2]
            assert sub.remote == f"{host}:{port}"
            assert (sub.path, sub.streams, sub.symbols) == (
                "/stream?streams=ethusdt@trade",
                ("ethusdt@trade",),
                {"ETHUSDT"},
            )
            spreader = SymbolSpreader(feed.subscribed_symbols)
            assert await feed.publish(spreader.route(trade("BTCUSDT", 7))) == 1
            assert (await message(ws))["data"]["s"] == "ETHUSDT"

    run(scenario)


def test_wait_subscribed_gives_up_at_its_deadline():
    async def scenario() -> None:
        async with serving() as feed, connect(feed.url("/ws")):
            with pytest.raises(TimeoutError, match="0 of 1 connection"):
                await feed.wait_subscribed(1, 0.3)

    run(scenario)


def test_a_closed_connection_is_not_counted():
    async def scenario() -> None:
        async with serving() as feed:
            async with connect(feed.url("/ws/btcusdt@trade")):
                await feed.wait_subscribed(1, DEADLINE)
            assert await feed.publish(trade("BTCUSDT", 1)) == 0

    run(scenario)


async def watch(url: str, *, pong: bool, seconds: float) -> tuple[int, int | None]:
    """Pings received and the close code the server sent (None: still open after ``seconds``), seen by
    a client on websockets' sans-I/O protocol that answers pings only when ``pong``."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri)
    reader, writer = await asyncio.open_connection(uri.host, uri.port)
    protocol.send_request(protocol.connect())
    pings = 0
    try:
        async with asyncio.timeout(seconds):
            while protocol.close_rcvd is None:
                outgoing = protocol.data_to_send()
                if pong or protocol.state is State.CONNECTING:
                    writer.writelines(chunk for chunk in outgoing if chunk)
                data = await reader.read(65536)
                if not data:
                    break
                protocol.receive_data(data)
                events = protocol.events_received()
                pings += sum(isinstance(e, Frame) and e.opcode is Opcode.PING for e in events)
    except TimeoutError:
        return pings, None
    finally:
        writer.close()
    return pings, protocol.close_rcvd.code if protocol.close_rcvd else -1


def test_server_pings_and_a_client_that_pongs_stays():
    async def scenario() -> None:
        async with serving(ping_interval=0.2, ping_timeout=1.0) as feed:
            pings, closed = await watch(feed.url("/ws/btcusdt@trade"), pong=True, seconds=2.0)
            assert closed is None
            assert pings >= 3

    run(scenario)


def test_a_client_that_never_pongs_is_disconnected():
    async def scenario() -> None:
        async with serving(ping_interval=0.2, ping_timeout=0.3) as feed:
            pings, closed = await watch(feed.url("/ws/btcusdt@trade"), pong=False, seconds=DEADLINE)
            assert pings >= 1
            assert closed == 1011  # websockets: "keepalive ping timeout"

    run(scenario)


def test_binance_defaults_are_the_exchange_values():
    feed = FeedServer(BinanceDialect())
    assert (feed.ping_interval, feed.ping_timeout, feed.max_connection_age) == (20.0, 60.0, 86_400.0)
    assert FeedServer(KrakenDialect(), ping_interval=None).ping_interval is None


def test_connections_are_closed_at_the_maximum_age_and_can_reconnect():
    async def scenario() -> None:
        async with serving(max_connection_age=0.5) as feed:
            opened = time.monotonic()
            async with connect(feed.url("/ws/btcusdt@trade")) as ws:
                async with asyncio.timeout(DEADLINE):
                    await ws.wait_closed()
                assert time.monotonic() - opened >= 0.5
                assert ws.close_code == 1000
                assert "older than 0.5s" in (ws.close_reason or "")
            async with connect(feed.url("/ws/btcusdt@trade")) as again:
                await feed.wait_subscribed(1, DEADLINE)
                assert await feed.publish(trade("BTCUSDT", 8)) == 1
                assert (await message(again))["t"] == 8

    run(scenario)


def test_wss_with_the_generated_ca(tmp_path: Path):
    files = tls.generate(tmp_path)

    async def scenario() -> None:
        async with serving(tls=files) as feed:
            url = feed.url("/ws/btcusdt@trade")
            assert url.startswith("wss://")
            with pytest.raises(ssl.SSLCertVerificationError):
                async with connect(url, ssl=ssl.create_default_context()):
                    pass
            async with connect(url, ssl=files.client_context(), server_hostname="localhost") as ws:
                await feed.wait_subscribed(1, DEADLINE)
                assert await feed.publish(trade("BTCUSDT", 9)) == 1
                assert (await message(ws))["t"] == 9

    run(scenario)


def test_kraken_subscribe_ack_updates_and_heartbeat():
    async def scenario() -> None:
        async with serving(KrakenDialect()) as feed, connect(feed.url("/v2")) as ws:
            assert (await message(ws))["channel"] == "status"
            await feed.publish(trade("BTCUSD", 1, maker=True))  # before the subscription: in the snapshot
            request = {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": True}
            await ws.send(json.dumps({"method": "subscribe", "params": request, "req_id": 42}))
            ack = await message(ws)
            assert (ack["method"], ack["req_id"], ack["success"]) == ("subscribe", 42, True)
            assert ack["result"] == {"channel": "trade", "symbol": "BTC/USD", "snapshot": True}
            snapshot = await message(ws)
            assert (snapshot["type"], [t["trade_id"] for t in snapshot["data"]]) == ("snapshot", [1])
            assert await feed.publish(trade("BTCUSD", 2)) == 1
            update = await message(ws)
            assert update["type"] == "update"
            (entry,) = update["data"]
            assert (entry["symbol"], entry["side"], entry["trade_id"]) == ("BTC/USD", "buy", 2)
            assert await message(ws) == {"channel": "heartbeat"}  # idle for a second once subscribed

    run(scenario)
