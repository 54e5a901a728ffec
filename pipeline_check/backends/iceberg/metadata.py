"""Reading an Iceberg table's metadata at a cost that follows what is new, not the table's history.

The metadata file lists every snapshot the table kept, and a writer rewrites the whole file at each
commit, so a plain refresh costs O(history) (pyiceberg validates every snapshot into an object). Here:

- on a SQL catalog the current metadata location is one indexed query (:func:`metadata_pointer`); an
  unchanged location means nothing was committed;
- :class:`MetadataReader` decodes a changed file (C-speed JSON) and validates, of its snapshots, only the
  ones it has not handled yet (and the current one): pydantic validation is the part that grows. The
  snapshot log (one entry per snapshot ever kept, and all a REST catalog's refs-only answer still grows by)
  is cut out of the text before it is decoded: nothing the probe reads needs it.

What the probe reads from the table's storage is counted by :class:`CountingIO` (one GET per file opened,
and the file's size as its bytes: an upper bound where a Parquet read is projected).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.io import FileIO, InputFile, InputStream, OutputFile
from pyiceberg.serializers import Compressor
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata, TableMetadataUtil

from pipeline_check.verdict.probe_load import ProbeLoad

# the spec's snapshot log: a list of {"timestamp-ms": n, "snapshot-id": n}, so its first "]" closes it
_SNAPSHOT_LOG = re.compile(rb'"snapshot-log"\s*:\s*\[[^\]]*\]')


def without_snapshot_log(text: bytes) -> bytes:
    """Metadata JSON (or a loadTable answer) with its snapshot log emptied, before it is decoded."""
    return _SNAPSHOT_LOG.sub(b'"snapshot-log":[]', text, count=1)


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

    def load(self, table: Table, location: str) -> tuple[Table, set[int]]:
        """The table at ``location`` with only new snapshots (and the current one) in its metadata, and
        the ids of those new snapshots (mark them ``handled`` once they are dealt with)."""
        with table.io.new_input(location).open() as raw:
            with Compressor.get_compressor(location).stream_decompressor(raw) as stream:
                text = stream.read()
        metadata, new = self.parse(text)
        return Table(table.name(), metadata, location, table.io, table.catalog), new

    def parse(self, text: str | bytes) -> tuple[TableMetadata, set[int]]:
        """Decoding the JSON is cheap (C); validating every snapshot into objects is what grows with
        history, so only the snapshots not handled yet, and the current one, are validated."""
        raw = text.encode() if isinstance(text, str) else text
        return self.parse_dict(json.loads(without_snapshot_log(raw)))

    def parse_dict(self, data: dict[str, Any]) -> tuple[TableMetadata, set[int]]:
        """:meth:`parse` of metadata already decoded (its snapshot log already cut, or short)."""
        current = data.get("current-snapshot-id")
        keep = {s["snapshot-id"] for s in data.get("snapshots", []) if s["snapshot-id"] not in self.handled}
        if current is not None and current != -1:
            keep.add(current)
        data["snapshots"] = [s for s in data.get("snapshots", []) if s["snapshot-id"] in keep]
        data["snapshot-log"] = [e for e in data.get("snapshot-log", []) if e.get("snapshot-id") in keep]
        data["metadata-log"] = []
        if "refs" in data:
            data["refs"] = {name: ref for name, ref in data["refs"].items() if ref.get("snapshot-id") in keep}
        for key in ("statistics", "partition-statistics"):
            if key in data:
                data[key] = [entry for entry in data[key] if entry.get("snapshot-id") in keep]
        return TableMetadataUtil.parse_obj(data), keep - self.handled


class CountingIO(FileIO):
    """A table's FileIO that adds every file it opens to a probe's load (``object_gets``), with the file's size
    as its bytes: known once the file is open (an object store's reader asks for it to read at all), so
    counting costs no request. Writes and deletes pass through uncounted (a probe makes none)."""

    def __init__(self, inner: FileIO, load: ProbeLoad) -> None:
        super().__init__(inner.properties)
        self.inner = inner
        self.load = load

    @classmethod
    def counted(cls, table: Table, load: ProbeLoad) -> Table:
        """``table`` reading through a counting FileIO (the same table when it already does)."""
        if isinstance(table.io, cls):
            return table
        return Table(table.name(), table.metadata, table.metadata_location, cls(table.io, load), table.catalog)

    def new_input(self, location: str) -> InputFile:
        return _CountedInput(self.inner.new_input(location), self.load)

    def new_output(self, location: str) -> OutputFile:
        return self.inner.new_output(location)

    def delete(self, location: str | InputFile | OutputFile) -> None:
        self.inner.delete(location)


class _CountedInput(InputFile):
    def __init__(self, inner: InputFile, load: ProbeLoad) -> None:
        super().__init__(inner.location)
        self.inner = inner
        self.load = load

    def __len__(self) -> int:
        self.load.add("object_gets")  # a HEAD
        return len(self.inner)

    def exists(self) -> bool:
        self.load.add("object_gets")
        return self.inner.exists()

    def open(self, seekable: bool = True) -> InputStream:
        stream = self.inner.open(seekable)
        size = getattr(stream, "size", None)  # a pyarrow file knows its size once open; a plain stream may not
        try:
            nbytes = int(size()) if callable(size) and seekable else 0
        except (OSError, ValueError):
            nbytes = 0
        self.load.add("object_gets", nbytes)
        return stream
