"""The table's id column (a legitimate shape, off by default): ``TABLE_ID_FORMAT=BINANCE-{id}`` writes ``trade_id``
as text, ``{id}`` standing for the trade id, as tables that carry formatted ids do (``BINANCE-<t>``,
``<exchange>:<id>``). Unset, ``trade_id`` is a long. A table already created keeps the type it was created with:
give such a shape its own table (``ICEBERG_TABLE``).

It applies to appends (``WRITE_MODE=append``) only: the other write modes and the late faults key rows by the
numeric trade id.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, StringType

from .common import env_str, fail
from .iceberg import TRADES_SCHEMA

NUMERIC_ONLY = ("WRITE_MODE", "UNSAFE_REWRITE_FRACTION", "UNSAFE_DELETE_FRACTION")


@dataclass(frozen=True, slots=True)
class TableShape:
    id_format: tuple[str, str] | None = None  # the text before and after {id}; None: the id as a long

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TableShape:
        template = env_str("TABLE_ID_FORMAT", "", env)
        if not template:
            return cls()
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as exc:
            fail("TABLE_ID_FORMAT", template, f"is not a template ({exc}); e.g. BINANCE-{{id}}")
        if [name for _, name, _, _ in parts if name is not None] != ["id"]:
            fail("TABLE_ID_FORMAT", template, "must hold {id} once and no other placeholder, e.g. BINANCE-{id}")
        for name in NUMERIC_ONLY:
            value = env_str(name, "", env)
            if value and value.lower() not in ("append", "0", "0.0"):
                fail(name, value, "keys rows by the numeric trade id; unset it or TABLE_ID_FORMAT")
        before = parts[0][0]
        return cls((before, "".join(literal for literal, _, _, _ in parts[1:])))

    @property
    def schema(self) -> Schema:
        if self.id_format is None:
            return TRADES_SCHEMA
        fields = [
            NestedField(f.field_id, f.name, StringType(), required=f.required) if f.name == "trade_id" else f
            for f in TRADES_SCHEMA.fields
        ]
        return Schema(*fields)

    def rows(self, arrow: pa.Table) -> pa.Table:
        """The writer's rows (``trade_id`` a long) in this shape."""
        if self.id_format is None:
            return arrow
        before, after = self.id_format
        ids = pc.binary_join_element_wise(before, pc.cast(arrow["trade_id"], pa.string()), after, "")
        index = arrow.schema.get_field_index("trade_id")
        return arrow.set_column(index, pa.field("trade_id", pa.string(), nullable=False), ids)
