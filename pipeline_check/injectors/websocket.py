"""The ``websocket`` injector: pipeline-check *is* the feed the ingestor dials.

It serves Binance-style raw streams (any path under ``source.path_prefix``, e.g. ``/ws/btcusdt@trade``)
and sends each message to every subscriber. With no subscriber it waits for one (the ingestor may be
reconnecting) up to ``source.subscribe_timeout``, then gives up with an ``EndpointError``.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from pydantic import Field
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from pipeline_check.durations import Duration
from pipeline_check.errors import EndpointError
from pipeline_check.injectors.base import InjectorContext
from pipeline_check.messages import TRADE_FIELDS, Trade
from pipeline_check.polling import Deadline
from pipeline_check.registry import PluginSettings


class WebSocketSettings(PluginSettings):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    path_prefix: str = "/ws/"
    subscribe_timeout: Duration = 30.0
    subscribers: int = Field(default=1, ge=1)


class WebSocketInjector:
    """A WebSocket server on the ingestor's feed address."""

    Settings: ClassVar[type[PluginSettings]] = WebSocketSettings
    feeds_stage: ClassVar[str | None] = None

    @classmethod
    def sent_fields(cls, settings: WebSocketSettings) -> tuple[str, ...]:
        return TRADE_FIELDS

    def __init__(self, settings: WebSocketSettings, ctx: InjectorContext) -> None:
        self.source = settings
        self.note = ctx.note
        self.url = f"ws://{self.source.host}:{self.source.port}{self.source.path_prefix}"
        self._clients: set[ServerConnection] = set()
        self._changed = asyncio.Event()
        self._server: Server | None = None

    async def start(self) -> None:
        try:
            self._server = await serve(
                self._serve, self.source.host, self.source.port, compression=None, ping_interval=None
            )
        except OSError as exc:
            raise EndpointError(
                "source.port",
                f"{self.source.host}:{self.source.port}",
                f"cannot listen ({exc.strerror or exc})",
                "stop what holds the port (the demo feed: `pipeline-check stack stop feed`) or change source.port",
            ) from None
        await self._await_subscribers(self.source.subscribers, "start")

    async def send(self, trade: Trade) -> None:
        text = trade.to_json()
        while True:
            if not self._clients:
                await self._await_subscribers(1, "resume")
            delivered = 0
            for client in list(self._clients):
                try:
                    await client.send(text)
                    delivered += 1
                except ConnectionClosed:
                    self._clients.discard(client)
            if delivered:
                return

    async def flush(self) -> None:
        """Each ``send`` already waited for the socket to take the frame."""

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client: ServerConnection) -> None:
        path = client.request.path if client.request else ""
        if not path.startswith(self.source.path_prefix):
            await client.close(1008, f"streams are served under {self.source.path_prefix}")
            return
        self._clients.add(client)
        self._changed.set()
        self.note(f"subscriber {client.remote_address[0]}:{client.remote_address[1]} on {path}")
        try:
            await client.wait_closed()
        finally:
            self._clients.discard(client)
            self.note(f"subscriber on {path} disconnected ({len(self._clients)} left)")

    async def _await_subscribers(self, wanted: int, why: str) -> None:
        deadline = Deadline.after(self.source.subscribe_timeout)
        while len(self._clients) < wanted:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline.remaining() or 1e-3)
            except TimeoutError:
                if len(self._clients) >= wanted:
                    break
                when = "came back" if why == "resume" else "subscribed"
                raise EndpointError(
                    "source.port",
                    self.url,
                    f"no ingestor {when} within {self.source.subscribe_timeout:g}s",
                    "is the ingestor running and dialing this address? (source.host/port/path_prefix)",
                ) from None
