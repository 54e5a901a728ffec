"""Reading an Iceberg table's metadata at a cost that follows what is new, not the table's history.

The metadata file lists every snapshot the table kept, and a writer rewrites the whole file at each
commit, so a plain refresh costs O(history) (pyiceberg validates every snapshot into an object). Here:

- on a SQL catalog the current metadata location is one indexed query (:func:`metadata_pointer`); an
  unchanged location means nothing was committed;
- :class:`MetadataReader` reads a changed file keeping, under ``"snapshots"``, only the snapshots it has
  not handled yet (and the current one). A snapshot whose JSON text is byte for byte what it was in the
  previous file is skipped with one string comparison instead of being parsed again; anything else is
  parsed, so a writer that reformats or expires snapshots costs a full parse once, never a wrong answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.serializers import Compressor
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata, TableMetadataUtil

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def metadata_pointer(table: Table) -> Callable[[], str | None] | None:
    """A cheap read of the table's current metadata location (one indexed query on a SQL catalog);
    None for other catalogs, which are refreshed in full."""
    from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    catalog: Catalog = table.catalog
    if not isinstance(catalog, SqlCatalog):
        return None
    statement = select(IcebergTables.metadata_location).where(
        IcebergTables.catalog_name == catalog.name,
        IcebergTables.table_namespace == Catalog.namespace_to_string(table.name()[:-1]),
        IcebergTables.table_name == table.name()[-1],
    )

    def read() -> str | None:
        with Session(catalog.engine) as session:
            location: str | None = session.scalar(statement)
        return location

    return read


class MetadataReader:
    """Reads successive metadata files of one table, validating only snapshots not handled before."""

    def __init__(self, handled: Iterable[int] = ()) -> None:
        self.handled: set[int] = set(handled)  # snapshot ids the caller is done with
        self._texts: list[tuple[int, str]] = []  # (snapshot id, JSON text) in file order, last file read
        self._index: dict[int, int] = {}  # snapshot id -> position in _texts
        self._previous: list[tuple[int, str]] = []  # _texts of the file before, while one is read
        self._parsed: dict[int, dict[str, Any]] = {}  # snapshots parsed (not skipped) in the file being read
        self._body = ""  # the snapshots array of the last file read, brackets excluded
        self._previous_body = ""  # _body of the file before, while one is read

    def load(self, table: Table, location: str) -> tuple[Table, set[int]]:
        """The table at ``location`` with only new snapshots (and the current one) in its metadata, and
        the ids of those new snapshots (mark them ``handled`` once they are dealt with)."""
        with table.io.new_input(location).open() as raw:
            with Compressor.get_compressor(location).stream_decompressor(raw) as stream:
                text = stream.read().decode("utf-8")
        metadata, new = self.parse(text)
        return Table(table.name(), metadata, location, table.io, table.catalog), new

    def parse(self, text: str) -> tuple[TableMetadata, set[int]]:
        data, snapshots = self._split(text)
        current = data.get("current-snapshot-id")
        keep = {sid for sid, _ in snapshots if sid not in self.handled}
        if current is not None and current != -1:
            keep.add(current)
        data["snapshots"] = [obj if obj is not None else _DECODER.decode(body) for sid, body, obj in self._kept(keep)]
        data["snapshot-log"] = [e for e in data.get("snapshot-log", []) if e.get("snapshot-id") in keep]
        data["metadata-log"] = []
        if "refs" in data:
            data["refs"] = {name: ref for name, ref in data["refs"].items() if ref.get("snapshot-id") in keep}
        for key in ("statistics", "partition-statistics"):
            if key in data:
                data[key] = [entry for entry in data[key] if entry.get("snapshot-id") in keep]
        return TableMetadataUtil.parse_obj(data), keep - self.handled

    # -- internals ---------------------------------------------------------------------------------------

    def _kept(self, keep: set[int]) -> list[tuple[int, str, dict[str, Any] | None]]:
        return [(sid, body, self._parsed.get(sid)) for sid, body in self._texts if sid in keep]

    def _split(self, text: str) -> tuple[dict[str, Any], list[tuple[int, str]]]:
        """The top-level object without ``"snapshots"``, and the snapshots as (id, text) in order."""
        self._previous, self._texts, self._parsed = self._texts, [], {}
        self._previous_body, self._body = self._body, ""
        data: dict[str, Any] = {}
        pos = _skip(text, 0)
        _expect(text, pos, "{")
        pos = _skip(text, pos + 1)
        if text[pos] == "}":
            self._index = {}
            return data, []
        while True:
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            _expect(text, pos, ":")
            pos = _skip(text, pos + 1)
            if key == "snapshots":
                pos = self._snapshots(text, pos)
            else:
                data[key], pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos] == "}":
                self._index = {sid: i for i, (sid, _) in enumerate(self._texts)}
                return data, self._texts
            _expect(text, pos, ",")
            pos = _skip(text, pos + 1)

    def _snapshots(self, text: str, pos: int) -> int:
        """Scan the snapshots array at ``pos``; skip what is as it was in the previous file: the whole
        previous array at once when the new one starts with it (a writer that only appended), else
        element by element."""
        previous, index, handled, body = self._previous, self._index, self.handled, self._previous_body
        _expect(text, pos, "[")
        pos = _skip(text, pos + 1)
        start = last = pos
        texts: list[tuple[int, str]] = []
        k = 0
        if body and text.startswith(body, pos) and all(sid in handled for sid, _ in previous):
            last = pos + len(body)
            after = _skip(text, last)
            if text[after] in ",]":
                texts, k = list(previous), len(previous)
                pos = after if text[after] == "]" else _skip(text, after + 1)
            else:
                last = pos
        while text[pos] != "]":
            if k < len(previous) and previous[k][0] in handled and text.startswith(previous[k][1], pos):
                texts.append(previous[k])
                pos += len(previous[k][1])
                k += 1
            else:
                obj, end = _DECODER.raw_decode(text, pos)
                sid = obj["snapshot-id"]
                texts.append((sid, text[pos:end]))
                self._parsed[sid] = obj
                k = index.get(sid, k - 1) + 1
                pos = end
            last = pos
            pos = _skip(text, pos)
            if text[pos] == "]":
                break
            _expect(text, pos, ",")
            pos = _skip(text, pos + 1)
        self._texts = texts
        self._body = text[start:last] if texts else ""
        return pos + 1


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _expect(text: str, pos: int, char: str) -> None:
    if pos >= len(text) or text[pos] != char:
        raise ValueError(f"table metadata: expected {char!r} at offset {pos}")
