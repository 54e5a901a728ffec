"""An ``echo`` feed dialect from outside the package: Binance's protocol with one field more in every trade
(``x``, the trade id again), so a stage may compare a field only this dialect sends."""

from __future__ import annotations

import json

from pipeline_check.backends.websocket.binance import BinanceDialect
from pipeline_check.backends.websocket.dialects import DIALECTS
from pipeline_check.canary.trades import Trade


def register() -> None:
    """Offer the dialect as ``dialect = "echo"`` in this process: its one registration."""
    DIALECTS.add("echo", f"{__name__}:EchoDialect")


class EchoDialect(BinanceDialect):
    name = "echo"

    @staticmethod
    def _payload(trade: Trade, kind: str) -> str:
        return json.dumps({**json.loads(BinanceDialect._payload(trade, kind)), "x": trade.trade_id})
