"""Demo feed: a Binance-style trade stream (random walk) on ws://host:FEED_PORT/ws/<symbol>@trade.

Every connected client gets every trade of every FEED_SYMBOLS symbol, FEED_RATE messages per second
in total. Trade ids come from one counter starting at 1. For demos only: the validator's WebSocket
injector takes this port during a run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .common import (
    ConfigError,
    ServiceError,
    Shutdown,
    env_int,
    env_port,
    env_str,
    load_config,
    run_main,
    setup_logging,
)

log = logging.getLogger("feed")

PATH_RE = re.compile(r"^/ws/([a-z0-9]{2,20})@trade$", re.IGNORECASE)
START_PRICES = {"BTCUSDT": Decimal("65000.00"), "ETHUSDT": Decimal("3500.00")}
TICK_S = 0.01


@dataclass(frozen=True, slots=True)
class FeedConfig:
    host: str
    port: int
    rate: int
    symbols: tuple[str, ...]

    @classmethod
    def from_env(cls) -> FeedConfig:
        raw = env_str("FEED_SYMBOLS", "BTCUSDT")
        symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
        bad = [s for s in symbols if not re.fullmatch(r"[A-Z0-9]{2,20}", s)]
        if not symbols or bad:
            raise ConfigError(f"FEED_SYMBOLS={raw!r} (env): comma-separated symbols like BTCUSDT,ETHUSDT")
        return cls(
            host=env_str("FEED_HOST", "127.0.0.1"),
            port=env_port("FEED_PORT"),
            rate=env_int("FEED_RATE", 50, minimum=0, maximum=1_000_000),
            symbols=symbols,
        )


class TradeGenerator:
    """Random-walk prices per symbol; prices have 2 decimals, quantities 5 (both ≤ 8)."""

    def __init__(self, symbols: tuple[str, ...], seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.symbols = symbols
        self.prices = {s: START_PRICES.get(s, Decimal("100.00")) for s in symbols}
        self.next_id = 1
        self._turn = 0

    def next(self) -> str:
        symbol = self.symbols[self._turn % len(self.symbols)]
        self._turn += 1
        price = self.prices[symbol]
        step = (price * Decimal(self.rng.gauss(0, 0.0002))).quantize(Decimal("0.01"))
        price = max(Decimal("0.01"), price + step)
        self.prices[symbol] = price
        quantity = Decimal(self.rng.randint(1, 200_000)) / Decimal(100_000)
        now = time.time_ns() // 1_000_000
        trade_id, self.next_id = self.next_id, self.next_id + 1
        return json.dumps(
            {
                "e": "trade",
                "E": now,
                "s": symbol,
                "t": trade_id,
                "p": f"{price:.8f}",
                "q": f"{quantity:.8f}",
                "T": now,
                "m": self.rng.random() < 0.5,
                "M": True,
            },
            separators=(",", ":"),
        )


class Feed:
    def __init__(self, cfg: FeedConfig) -> None:
        self.cfg = cfg
        self.clients: set[ServerConnection] = set()
        self.generator = TradeGenerator(cfg.symbols)

    def check_path(self, _: ServerConnection, request: Request) -> Response | None:
        if PATH_RE.match(request.path.split("?", 1)[0]):
            return None
        body = b"expected /ws/<symbol>@trade\n"
        return Response(HTTPStatus.NOT_FOUND.value, "Not Found", Headers([("Content-Length", str(len(body)))]), body)

    async def handler(self, ws: ServerConnection) -> None:
        self.clients.add(ws)
        log.info(
            "client connected: %s %s (%d clients)",
            ws.remote_address,
            ws.request.path if ws.request else "?",
            len(self.clients),
        )
        try:
            await ws.wait_closed()
        finally:
            self.clients.discard(ws)
            log.info("client gone: %s (%d clients)", ws.remote_address, len(self.clients))

    async def pump(self, shutdown: Shutdown) -> None:
        """Emit FEED_RATE trades per second in small ticks; the credit carries fractions over."""
        credit = 0.0
        last = time.monotonic()
        while not shutdown.requested:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            credit = min(credit + (now - last) * self.cfg.rate, self.cfg.rate + 1.0)
            last = now
            while credit >= 1.0:
                credit -= 1.0
                message = self.generator.next()
                if self.clients:
                    broadcast(self.clients, message)


async def main() -> int:
    setup_logging("feed")
    cfg = load_config(FeedConfig.from_env)
    shutdown = Shutdown()
    shutdown.install()
    feed = Feed(cfg)
    try:
        server: Server = await serve(feed.handler, cfg.host, cfg.port, process_request=feed.check_path)
    except OSError as exc:
        raise ServiceError(
            f"FEED_PORT={cfg.port}: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
        ) from None
    log.info(
        "feed on ws://%s:%d/ws/<symbol>@trade: %d msg/s of %s", cfg.host, cfg.port, cfg.rate, ",".join(cfg.symbols)
    )
    await feed.pump(shutdown)
    server.close()
    await asyncio.wait_for(server.wait_closed(), 3)
    return 0


if __name__ == "__main__":
    run_main(main)
