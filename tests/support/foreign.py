"""A record schema nobody wrote for pipeline-check (a message id, an enum, a nested record, renamed fields) and a
``[source.record]`` template that puts canaries into it: the unit and e2e tests of record templates share them."""

from __future__ import annotations

from typing import Any

FOREIGN: dict[str, Any] = {
    "type": "record",
    "name": "Execution",
    "namespace": "com.example.md",
    "fields": [
        {"name": "msg_id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["TRADE", "QUOTE"]}},
        {"name": "exec_ref", "type": "string"},
        {"name": "instrument", "type": {"type": "record", "name": "Instrument", "fields": [
            {"name": "symbol", "type": "string"},
            {"name": "venue", "type": "string"},
        ]}},
        {"name": "px", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 8}},
        {"name": "qty", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 8}},
        {"name": "aggressor", "type": {"type": "enum", "name": "Aggressor", "symbols": ["BID", "ASK"]}},
        {"name": "exec_ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}  # fmt: skip

TEMPLATE = """
[source.record]
msg_id = "{uuid}"
kind = "TRADE"
exec_ref = "BINANCE-{tag}"
instrument = { symbol = "{symbol}", venue = "BINANCE" }
px = "{price}"
qty = "{quantity}"
aggressor = { from = "side", map = { BUY = "BID", SELL = "ASK" } }
exec_ts = "{time}"
"""
