"""``FeedServer``: the exchange WebSocket feed an ingestor dials, in one exchange's dialect.

The dialect says what goes over the wire; the server keeps the connections, sends each published trade
only to the connections that follow one of its streams, pings at the exchange's interval (closing a
connection whose pong does not come back in time), sends the dialect's heartbeat on idle subscribed
connections and closes connections that reach the exchange's maximum age, so a scenario can watch an
ingestor reconnect. It keeps, per connection, what it was sent (``connections``), so a report can say
which canaries went to which subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from pipeline_check.backends.websocket.dialect import Dialect, PathRejected, Session
from pipeline_check.backends.websocket.tls import TlsFiles
from pipeline_check.canary.trades import Trade

Exchange = Literal["exchange"]
EXCHANGE: Exchange = "exchange"  # "as the exchange does": the dialect's documented value
AGE_CLOSE_CODE = 1000


@dataclass(frozen=True, slots=True)
class Subscription:
    """One open connection: who dialled which path, the streams it follows and the ``Trade`` symbols
    those carry (empty until it subscribes to a trade stream)."""

    remote: str
    path: str
    streams: tuple[str, ...]
    symbols: frozenset[str]
    age: float


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection over its life: who dialled which path, the streams it followed last, how long it
    stayed and why it ended (empty while open), and the trades it was sent: canaries per symbol they
    carried, with the first and last canary sequence, and background trades."""

    remote: str
    path: str
    streams: tuple[str, ...]
    seconds: float
    ended: str
    canaries: Mapping[str, int]
    first_canary: int | None
    last_canary: int | None
    background: int


@dataclass(slots=True, eq=False)
class _Client:
    ws: ServerConnection
    remote: str
    session: Session
    opened: float
    last_sent: float
    # frames go out in the order they were decided (an ack before the updates it enables)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    canaries: Counter[str] = field(default_factory=Counter)
    first_canary: int | None = None
    last_canary: int | None = None
    background: int = 0
    retired: float | None = None  # closed at this maximum age

    def count(self, trade: Trade) -> None:
        if trade.seq is None:
            self.background += 1
            return
        self.canaries[trade.symbol] += 1
        if self.first_canary is None:
            self.first_canary = trade.seq
        self.last_canary = trade.seq

    async def send(self, frames: Sequence[str]) -> bool:
        """False when the connection is gone."""
        try:
            async with self.lock:
                for frame in frames:
                    await self.ws.send(frame)
        except ConnectionClosed:
            return False
        self.last_sent = time.monotonic()
        return True


def _address(address: Any) -> str:
    """A socket address (websockets types it Any) as ``127.0.0.1:54321`` or ``[::1]:54321``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FeedServer:
    """Serves ``dialect`` on ``host:port`` (port 0: a free one, see ``port``), over TLS with ``tls``.

    ``ping_interval``, ``ping_timeout`` and ``max_connection_age`` default to the exchange's documented
    values; None turns each off. A path outside ``path_prefix`` is refused before the dialect sees it.
    """

    def __init__(
        self,
        dialect: Dialect,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsFiles | None = None,
        ping_interval: float | Exchange | None = EXCHANGE,
        ping_timeout: float | Exchange | None = EXCHANGE,
        max_connection_age: float | Exchange | None = EXCHANGE,
        path_prefix: str = "/",
    ) -> None:
        self.dialect = dialect
        self.host = host
        self.tls = tls
        self.path_prefix = path_prefix
        self.ping_interval = dialect.ping_interval if ping_interval == EXCHANGE else ping_interval
        self.ping_timeout = dialect.ping_timeout if ping_timeout == EXCHANGE else ping_timeout
        self.max_connection_age = dialect.max_connection_age if max_connection_age == EXCHANGE else max_connection_age
        self._port = port
        self._server: Server | None = None
        # sessions between the accepted path and the handler; weak, so a handshake that fails after its
        # path was accepted leaves nothing behind
        self._opening: weakref.WeakKeyDictionary[ServerConnection, Session] = weakref.WeakKeyDictionary()
        self._clients: dict[ServerConnection, _Client] = {}
        self._ended: list[Connection] = []
        self._closing = False
        self._history: dict[str, deque[Trade]] = {}
        self._changed = asyncio.Event()
        self._symbols: frozenset[str] | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when ``port`` was 0)."""
        if self._server is None:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, path: str = "") -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}{path}"

    async def start(self) -> None:
        """Listen; ``OSError`` when the address cannot be bound."""
        self._server = await serve(
            self._serve,
            self.host,
            self._port,
            process_request=self._open,
            ssl=self.tls.server_context() if self.tls else None,
            compression=None,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
        )

    async def close(self) -> None:
        """Stop listening and close every connection (code 1001, going away)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def publish(self, trade: Trade, via: str | None = None) -> int:
        """Send ``trade`` to every connection following a stream of ``via`` (default: its own symbol),
        as a trade of its own symbol; how many connections got it."""
        if self.dialect.history_depth:
            self._history.setdefault(trade.symbol, deque(maxlen=self.dialect.history_depth)).append(trade)
        symbol = via or trade.symbol
        delivered = 0
        for client in list(self._clients.values()):
            streams = client.session.streams_of(symbol)
            if not streams:
                continue
            # a closing connection would hold the send until its closing handshake is over
            if client.ws.state is State.OPEN and await client.send(self.dialect.encode(client.session, trade, streams)):
                client.count(trade)
                delivered += 1
            else:
                self._gone(client)  # at once: routing must not pick a closed connection again
        return delivered

    def connections(self) -> tuple[Connection, ...]:
        """Every connection so far, ended ones first, with what it was sent."""
        return (*self._ended, *(self._report(c, "") for c in self._clients.values()))

    def subscriptions(self) -> tuple[Subscription, ...]:
        now = time.monotonic()
        return tuple(
            Subscription(
                remote=c.remote,
                path=c.session.path,
                streams=tuple(c.session.streams),
                symbols=c.session.symbols(),
                age=now - c.opened,
            )
            for c in self._clients.values()
        )

    def subscribed_symbols(self) -> frozenset[str]:
        """The ``Trade`` symbols some connection follows (the same object until subscriptions change)."""
        if self._symbols is None:
            self._symbols = frozenset().union(*(c.session.symbols() for c in self._clients.values()))
        return self._symbols

    async def wait_subscribed(self, connections: int, timeout: float) -> tuple[Subscription, ...]:
        """Wait until ``connections`` connections follow a trade stream; ``TimeoutError`` otherwise."""

        def subscribed() -> list[Subscription]:
            return [s for s in self.subscriptions() if s.symbols]

        if not await self.wait_until(lambda: len(subscribed()) >= connections, timeout):
            raise TimeoutError(
                f"{len(subscribed())} of {connections} connection(s) subscribed to a trade stream within {timeout:g}s"
            )
        return tuple(subscribed())

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` holds, asking again whenever the subscriptions change; False when it
        still does not after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return ready()
        return True

    async def wait_quiet(self, quiet: float, timeout: float) -> None:
        """Wait until no subscription changed for ``quiet`` seconds, or ``timeout`` passed: an ingestor
        may subscribe in several frames, one after its connection opened."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(quiet, left))
            except TimeoutError:
                return

    def _open(self, ws: ServerConnection, request: Request) -> Response | None:
        """Handshake hook: a path the dialect does not serve gets its HTTP error, no WebSocket."""
        if not request.path.startswith(self.path_prefix):
            return ws.respond(404, f"no feed at {request.path}: this feed serves paths under {self.path_prefix}\n")
        try:
            self._opening[ws] = self.dialect.connect(request.path)
        except PathRejected as rejected:
            return ws.respond(rejected.status, f"{rejected.reason}\n")
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        now = time.monotonic()
        client = _Client(ws, _address(ws.remote_address), self._opening.pop(ws), opened=now, last_sent=now)
        self._clients[ws] = client
        self._subscriptions_changed()
        chores = [asyncio.create_task(self._heartbeat(client))] if self.dialect.heartbeat else []
        if self.max_connection_age is not None:
            chores.append(asyncio.create_task(self._retire(client, self.max_connection_age)))
        try:
            await client.send(self.dialect.greet(client.session, _utcnow()))
            async for message in ws:
                frame = message if isinstance(message, str) else message.decode("utf-8", "replace")
                before = tuple(client.session.streams)
                replies = self.dialect.handle(client.session, frame, _utcnow(), self._history)
                if tuple(client.session.streams) != before:
                    self._subscriptions_changed()
                await client.send(replies)
        except ConnectionClosed:
            pass  # the client went away without a closing handshake; nothing is owed to it
        finally:
            for chore in chores:
                chore.cancel()
            self._gone(client)

    def _gone(self, client: _Client) -> None:
        """Forget a closed connection (once), keeping its report."""
        if self._clients.get(client.ws) is not client:
            return
        del self._clients[client.ws]
        self._ended.append(self._report(client, self._why_ended(client)))
        self._subscriptions_changed()

    def _why_ended(self, client: _Client) -> str:
        if client.retired is not None:
            return f"closed at the maximum connection age ({client.retired:g}s)"
        if self._closing:
            return "open until the feed closed"
        code = client.ws.close_code
        return "connection lost" if code in (None, 1006) else f"closed by the subscriber (code {code})"

    def _report(self, client: _Client, ended: str) -> Connection:
        return Connection(
            remote=client.remote,
            path=client.session.path,
            streams=tuple(client.session.streams),
            seconds=time.monotonic() - client.opened,
            ended=ended,
            canaries=dict(client.canaries),
            first_canary=client.first_canary,
            last_canary=client.last_canary,
            background=client.background,
        )

    def _subscriptions_changed(self) -> None:
        self._symbols = None
        self._changed.set()

    async def _heartbeat(self, client: _Client) -> None:
        heartbeat = self.dialect.heartbeat
        if heartbeat is None:
            return
        while True:
            idle = time.monotonic() - client.last_sent
            if idle < heartbeat.interval or not client.session.streams:
                await asyncio.sleep(heartbeat.interval - idle if client.session.streams else heartbeat.interval)
            elif not await client.send([heartbeat.frame]):
                return

    async def _retire(self, client: _Client, age: float) -> None:
        await asyncio.sleep(age)
        client.retired = age
        self._gone(client)  # nothing more is routed to it; what it was sent arrives before the close frame
        with contextlib.suppress(ConnectionClosed):
            await client.ws.close(AGE_CLOSE_CODE, f"connection older than {age:g}s (the exchange's limit)")
