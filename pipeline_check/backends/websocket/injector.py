"""The ``websocket`` injector: pipeline-check *is* the exchange feed the ingestor dials.

It serves one exchange's protocol (``source.dialect``: ``binance`` streams or ``kraken`` v2) through
:class:`~pipeline_check.backends.websocket.server.FeedServer`, over ``wss://`` with ``source.tls``, and
sends each trade only to the connections that follow one of its streams. Background trades are dealt over
the subscribed symbols.

Canaries ride their own symbol by default (``source.canaries_ride = "own"``): a connection that follows
it gets them there; otherwise each canary is carried on the streams of the next subscribed symbol, its
own symbol in the payload, as the demo feed always did (an ingestor that drops symbols it did not
subscribe to drops them, and loses them). With ``"subscribed"`` canaries ride the subscribed symbols
themselves, the tag in the trade id: the injector takes them once the subscriptions settled at start and
the engine adopts them (``canary_symbols``); they reach only the partitions those symbols key to.

Downstream records are compared with the dialect's wire record (``sent_record``): Binance's trade (its
aggTrade when that is what the subscribers follow), Kraken's trade entry. With no connection to take a
canary (an ingestor reconnecting) ``send`` waits up to ``source.subscribe_timeout``, then raises
``EndpointError``. At the end, one note per connection says which canaries it was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from pipeline_check.backends.injector import InjectorContext
from pipeline_check.backends.websocket import tls
from pipeline_check.backends.websocket.dialect import Dialect
from pipeline_check.backends.websocket.dialects import DIALECTS, known_dialect
from pipeline_check.backends.websocket.routing import SymbolSpreader
from pipeline_check.backends.websocket.server import EXCHANGE, Connection, FeedServer
from pipeline_check.backends.websocket.tls import TlsFiles
from pipeline_check.canary.trades import Trade
from pipeline_check.core.durations import Duration, duration
from pipeline_check.core.errors import EndpointError
from pipeline_check.core.plugins import PluginSettings

# an ingestor subscribes in several frames: the subscriptions canaries ride are taken once they stayed
# unchanged this long
SUBSCRIPTIONS_QUIET = 0.5
MAX_CANARY_SYMBOLS = 255  # TradeFactory's limit
_SAMPLE = Trade("BTCUSDT", 1, "1.0", "1.0", False, 0)


def _age(value: object) -> object:
    if value in ("exchange", "never"):
        return value
    try:
        seconds = duration(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ValueError("expected a duration such as 30s or 2m, or exchange (the dialect's limit) or never")
    return seconds


class TlsSettings(BaseModel):
    """``source.tls``: a certificate generated for the run (``generate``, files in ``folder``, valid for
    ``hosts``), or the user's ``cert`` and ``key`` (with the ``ca`` that signed them, to tell the user)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generate: bool = False
    folder: Path = Path("reports/tls")
    hosts: tuple[str, ...] = Field(default=tls.DEFAULT_HOSTS, min_length=1)
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @model_validator(mode="after")
    def _one_way(self) -> TlsSettings:
        given = self.cert is not None or self.key is not None
        if self.generate and given:
            raise ValueError("give either generate = true or cert and key, not both")
        if not self.generate:
            if self.cert is None or self.key is None:
                raise ValueError("needs generate = true, or cert and key (PEM files)")
            tls.load(self.cert, self.key, self.ca)  # ConfigError now, not when the run starts
        return self

    def files(self) -> TlsFiles:
        if self.cert is not None and self.key is not None:  # the validator allows no other mix
            return tls.load(self.cert, self.key, self.ca)
        return tls.generate(self.folder, self.hosts)


class WebSocketSettings(PluginSettings):
    dialect: Annotated[str, AfterValidator(known_dialect)] = "binance"  # a name in DIALECTS
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    path_prefix: str = "/"  # the paths ingestors may dial; the dialect refuses the ones it does not serve
    subscribe_timeout: Duration = 30.0
    subscribers: int = Field(default=1, ge=1)
    tls: TlsSettings | None = None
    max_connection_age: Annotated[float | Literal["exchange", "never"], BeforeValidator(_age)] = "exchange"
    canaries_ride: Literal["own", "subscribed"] = "own"


class WebSocketInjector:
    """The exchange feed on the ingestor's feed address."""

    Settings: ClassVar[type[PluginSettings]] = WebSocketSettings
    feeds_stage: ClassVar[str | None] = None

    @classmethod
    def sent_fields(cls, settings: WebSocketSettings) -> tuple[str, ...]:
        """The fields of the dialect's records, of every kind of stream it sends trades on."""
        dialect = DIALECTS.get(settings.dialect)()
        return tuple(dict.fromkeys(k for kind in dialect.formats for k in dialect.record(_SAMPLE, kind)))

    def __init__(self, settings: WebSocketSettings, ctx: InjectorContext) -> None:
        self.source = settings
        self.note = ctx.note
        self.dialect: Dialect = DIALECTS.get(settings.dialect)()
        age = settings.max_connection_age
        self.server = FeedServer(
            self.dialect,
            settings.host,
            settings.port,
            max_connection_age=EXCHANGE if age == "exchange" else None if age == "never" else age,
            path_prefix=settings.path_prefix,
        )
        self._background = SymbolSpreader(self.server.subscribed_symbols)
        self._carriers = SymbolSpreader(self.server.subscribed_symbols)
        self._riding: tuple[str, ...] | None = None
        self._kind: str | None = None

    @property
    def url(self) -> str:
        return self.server.url(self.source.path_prefix)

    async def start(self) -> None:
        if self.source.tls is not None:
            self.server.tls = files = self.source.tls.files()
            self.note(self._tls_note(files))
        try:
            await self.server.start()
        except OSError as exc:
            raise EndpointError(
                "source.port",
                f"{self.source.host}:{self.source.port}",
                f"cannot listen ({exc.strerror or exc})",
                "stop what holds the port (the demo feed: `pipeline-check stack stop feed`) or change source.port",
            ) from None
        self.note(f"serving the {self.dialect.name} feed at {self.url}")
        try:
            await self.server.wait_subscribed(self.source.subscribers, self.source.subscribe_timeout)
        except TimeoutError:
            following = sum(1 for s in self.server.subscriptions() if s.symbols)
            wanted = self.source.subscribers
            problem = f"no ingestor subscribed within {self.source.subscribe_timeout:g}s"
            raise EndpointError(
                "source.port",
                self.url,
                f"{problem} ({following} of {wanted} connection(s) follow a trade stream)",
                self._dial_hint(),
            ) from None
        if self.source.canaries_ride == "subscribed":
            await self.server.wait_quiet(SUBSCRIPTIONS_QUIET, self.source.subscribe_timeout)
            symbols = sorted(self.server.subscribed_symbols())
            self._riding = tuple(symbols[:MAX_CANARY_SYMBOLS])
            extra = len(symbols) - len(self._riding)
            more = f" ({extra} more get background trades only)" if extra else ""
            self.note(f"canaries ride the subscribed symbols {', '.join(self._riding)}{more}")

    def canary_symbols(self) -> tuple[str, ...] | None:
        """The symbols canaries ride, when the subscriptions decided them at start (the engine adopts
        them); None: the engine's choice stands."""
        return self._riding

    def sent_record(self, trade: Trade) -> Mapping[str, object]:
        """The record a subscriber received for ``trade``: what a stage's ``fields`` compare against."""
        if self._kind is None:
            self._kind = self._record_kind()
        return self.dialect.record(trade, self._kind)

    async def send(self, trade: Trade) -> None:
        if trade.seq is None:
            # while nobody follows a trade stream (an ingestor reconnecting) it reaches no one, as on the exchange
            await self.server.publish(self._background.route(trade))
            return
        while True:
            via = trade.symbol if self._riding else self._carriers.carrier(trade.symbol)
            if via is not None and await self.server.publish(trade, via):
                return
            await self._await_follower(trade.symbol if self._riding else None)

    async def flush(self) -> None:
        """Each ``send`` already waited for the sockets to take its frames."""

    async def close(self) -> None:
        await self.server.close()
        idle = []
        for connection in self.server.connections():
            if connection.background or connection.canaries:
                self.note(_delivery_note(connection))
            elif connection.streams:
                idle.append(f"{connection.remote} ({connection.ended or 'open'})")
        if idle:
            self.note(f"{len(idle)} more subscriber connection(s) were sent nothing: {', '.join(idle)}")

    # -- helpers -------------------------------------------------------------------------------------

    async def _await_follower(self, symbol: str | None) -> None:
        """Wait until a connection follows ``symbol`` (None: any trade stream) again."""
        subscribed = self.server.subscribed_symbols
        ready: Callable[[], bool] = (lambda: symbol in subscribed()) if symbol else (lambda: bool(subscribed()))
        if not await self.server.wait_until(ready, self.source.subscribe_timeout):
            what = f"the stream of {symbol}" if symbol else "a trade stream"
            raise EndpointError(
                "source.port",
                self.url,
                f"no ingestor followed {what} again within {self.source.subscribe_timeout:g}s",
                self._dial_hint(),
            )

    def _record_kind(self) -> str:
        """The kind of stream the subscribers follow; with several, the dialect's first (Binance: trade)."""
        streams = (s for c in self.server.connections() for s in c.streams)
        kinds = sorted({kind for s in streams if (kind := self.dialect.kind_of(s)) is not None})
        if len(kinds) == 1:
            return kinds[0]
        first = next(iter(self.dialect.formats))
        if kinds:
            self.note(f"subscribers follow {' and '.join(kinds)} streams: stage fields are compared with {first}")
        return first

    def _dial_hint(self) -> str:
        ca = self.server.tls.ca if self.server.tls else None
        trust = f" over wss://, trusting {ca}" if ca else ""
        return f"is the ingestor running and dialling {self.url}{trust}? (source.host, port, path_prefix, dialect)"

    @staticmethod
    def _tls_note(files: TlsFiles) -> str:
        if files.ca is None:
            return f"feed TLS: wss:// with the certificate {files.cert}"
        return (
            f"feed TLS: wss:// with a certificate signed by the CA in {files.ca.resolve()}: an ingestor trusts it "
            f"when pointed at that file (SSL_CERT_FILE, or the reference ingestor's FEED_CA_FILE, which it "
            f"re-reads on every reconnect)"
        )


def _delivery_note(c: Connection) -> str:
    """Which canaries one connection was sent: ``subscriber 127.0.0.1:5 on /ws (btcusdt@trade) for 9.8s,
    open until the feed closed: 500 canaries #0..#998 (500 on BTCUSDT), 1,000 background trades``."""
    count = sum(c.canaries.values())
    which = ""
    if count:
        per_symbol = ", ".join(f"{n:,} on {symbol}" for symbol, n in sorted(c.canaries.items()))
        which = f" #{c.first_canary}..#{c.last_canary} ({per_symbol})"
    streams = ", ".join(c.streams) or "no stream"
    return (
        f"subscriber {c.remote} on {c.path} ({streams}) for {c.seconds:.1f}s, {c.ended or 'open'}: "
        f"{count:,} canaries{which}, {c.background:,} background trades"
    )
