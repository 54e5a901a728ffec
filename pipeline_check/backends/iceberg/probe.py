"""The ``iceberg`` probe: a canary is in the table when a committed snapshot makes a row of it live.

At start it notes the table's current snapshot (the baseline). Each poll reads only the snapshots
committed since the last poll and, for each, the rows it adds and removes within the run's tag range
(file statistics skip every other run's files), so the cost follows new data, not the table's history.
The live rows per canary after each snapshot are what the recorder is told: more than one at once is a
duplicate, none after some is a retraction. Each canary keeps the snapshot that first made it live and
that snapshot's own timestamp (the writer's clock) beside the probe's time.

A full refresh would parse every snapshot the table ever kept; on a SQL catalog the probe reads the
metadata pointer first and validates only the snapshots it has not handled (``iceberg_metadata``), so
the cost of a poll stays flat as history grows. On a REST catalog it asks ``loadTable`` conditionally and
for referenced snapshots only (:class:`RestMetadata`), to the same effect. Other catalogs get a plain ``refresh()``.

It polls as ``backends.polling`` says: every ``poll_interval`` while the upstream stage holds canaries the table
has not shown and during the settle window, every ``idle_interval`` otherwise, a poll (one catalog request)
never more often than ``max_request_rate``. Every catalog request and file read is counted in the probe's load.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

from pydantic import Field
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import ForbiddenError, NoSuchTableError, UnauthorizedError
from pyiceberg.table import Table

from pipeline_check.backends.iceberg.changes import ChangeFeed, LiveRows, SnapshotChange
from pipeline_check.backends.iceberg.metadata import CountingIO, MetadataReader, metadata_pointer, without_snapshot_log
from pipeline_check.backends.iceberg.tag_filter import TagFilter
from pipeline_check.backends.polling import PollPolicy, PollSettings
from pipeline_check.backends.probe import ProbeContext, ProbeLoad, Ref
from pipeline_check.canary.fidelity import Fields
from pipeline_check.canary.tag_readers import TagFormSettings
from pipeline_check.core.durations import Duration
from pipeline_check.core.errors import ConfigError, EndpointError, PipelineCheckError
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.core.redaction import redact


class IcebergSettings(TagFormSettings, PollSettings):
    catalog: dict[str, str]  # pyiceberg catalog properties (type, uri, warehouse, credentials...)
    catalog_name: str = "default"
    table: str = Field(pattern=r"^[\w.]+\.\w+$")
    tag_column: str = "trade_id"  # the tag itself (long, int), or text around it with tag_pattern / tag_regex
    fields: Fields = Field(default_factory=dict)
    # a column whose values order the rows per key (e.g. kafka_offset): ordering is judged on it
    order_column: str | None = None
    # how long polls may keep failing (a locked catalog, a catalog server restarting, a file mid-write)
    # before the run gives up on the stage
    give_up_after: Duration = 60.0


class IcebergProbe:
    Settings: ClassVar[type[PluginSettings]] = IcebergSettings

    def __init__(self, settings: IcebergSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        extra = (settings.order_column,) if settings.order_column else ()
        self._columns = tuple(dict.fromkeys((settings.tag_column, *settings.fields, *extra)))
        self._table: Table | None = None
        self._tags = tag_filter(settings, ctx.run.lo, ctx.run.hi, f"stages.{ctx.stage}")
        self._feed = ChangeFeed(settings.tag_column, ctx.run.lo, ctx.run.hi, self._columns, tags=self._tags)
        self._pointer: Callable[[], str | None] | None = None  # the metadata location, where cheap to read
        self._rest: RestMetadata | None = None  # conditional loads, on a REST catalog
        self._reader = MetadataReader()
        self._live = LiveRows()
        self._poll = PollPolicy.of(settings, ctx)

    async def start(self) -> None:
        table = await asyncio.to_thread(open_table, self.settings, f"stages.{self.ctx.stage}")
        self.ctx.load.add("catalog_loads")
        table = CountingIO.counted(table, self.ctx.load)
        self._check_columns(table)
        self._pointer = metadata_pointer(table)
        self._reader = MetadataReader(snapshot.snapshot_id for snapshot in table.snapshots())
        self._rest = RestMetadata.of(table, self._reader, self.ctx.load)
        if self._pointer is not None:  # read the file once, so the first poll skips what it holds
            table, _ = await asyncio.to_thread(self._reader.load, table, table.metadata_location)
        self._table = table
        current = table.current_snapshot()
        if current is not None:  # the baseline: the state before the run (other runs' files are pruned)
            await asyncio.to_thread(self._feed.seek, table, current)
        if self.settings.order_column:
            self.ctx.recorder.declare_ordered(self.ctx.stage)

    async def run(self, stop: asyncio.Event) -> None:
        failing_since: float | None = None
        while not stop.is_set():
            await self._poll.request()
            try:
                seen_at, changes = await asyncio.to_thread(self.poll)
                self._poll.looked(seen_at)
                failing_since = None
            except PipelineCheckError:
                raise  # a change the probe cannot count: no retry makes it countable
            except Exception as exc:  # transient (a locked catalog, a file mid-write) until it lasts
                now = self.ctx.clock.now()
                failing_since = now if failing_since is None else failing_since
                self.ctx.note(
                    f"Iceberg poll failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); retrying"
                )
                if now - failing_since >= self.settings.give_up_after:
                    raise EndpointError(
                        f"stages.{self.ctx.stage}.table", self.settings.table,
                        f"polls failed for {now - failing_since:.0f}s ({type(exc).__name__}: {exc})",
                        f"is the catalog reachable? (give_up_after = {self.settings.give_up_after:g}s)",
                    ) from exc  # fmt: skip
                changes, seen_at = [], now
            self._record(seen_at, changes)
            await self._poll.wait(stop)

    async def finish(self) -> None:
        """A last look, so rows committed or removed just before the stop are counted."""
        if self._table is not None:
            await self._poll.request()
            self._record(*await asyncio.to_thread(self.poll))

    @property
    def resolution(self) -> float:
        return self._poll.resolution

    def poll(self) -> tuple[float, list[SnapshotChange]]:
        """Refresh, then read what each snapshot committed since the last poll changed (on a worker thread)."""
        if self._table is None:
            raise RuntimeError("IcebergProbe.poll before start")
        table, new = self._refreshed(self._table)
        seen_at = self.ctx.clock.now()
        changes = self._feed.poll(table)
        self._table = table
        self._reader.handled |= new
        return seen_at, changes

    def _refreshed(self, table: Table) -> tuple[Table, set[int]]:
        """The table as it is now, and the ids of snapshots validated for it that are new."""
        load = self.ctx.load
        if self._rest is not None:
            return self._rest.load(table, self._feed.snapshot_id)
        if self._pointer is None:
            load.add("catalog_loads")
            table.refresh()
            return CountingIO.counted(table, load), set()
        location = self._pointer()
        load.add("catalog_loads", len(location or ""))
        if location is None or location == table.metadata_location:
            return table, set()
        return self._reader.load(table, location)

    def _record(self, seen_at: float, changes: list[SnapshotChange]) -> None:
        """The table as this look finds it: each canary's live rows after every snapshot committed since the
        last look (0 after a sighting: gone; back above 0: restored), then every canary row version those
        snapshots wrote (an append, an overwrite's or update's rewritten row, a compaction's copy), compared
        with what was sent: a row rewritten with other values is corrupted. A row gone and back between two
        looks (one commit's delete and append, as an overwrite writes them) is no retraction: no reader saw it
        gone, as far as the probe's resolution can tell."""
        recorder, stage, settings = self.ctx.recorder, self.ctx.stage, self.settings
        first: dict[int, SnapshotChange] = {}  # tag -> the first snapshot of this look that changed it
        for change in changes:
            self._live.apply(change)
            for tag in change.delta:
                first.setdefault(tag, change)
        for tag, change in first.items():
            live = self._live.counts.get(tag, 0)
            recorder.seen(stage, tag, seen_at, copies=live, source_ms=change.timestamp_ms, ref=self._ref(change, tag))
        if settings.fields:
            for change in changes:
                for tag, row in change.rows.items():
                    recorder.diff(stage, tag, row, settings.fields, at=seen_at)

    def _ref(self, change: SnapshotChange, tag: int) -> Ref:
        """Where the canary became live: the snapshot, or its ordering column's value when one is named."""
        order = self.settings.order_column
        value = change.rows[tag].get(order) if order is not None and tag in change.rows else None
        return Ref(-1, value) if isinstance(value, int) else Ref(-1, change.snapshot_id)

    def _check_columns(self, table: Table) -> None:
        """Settings that name columns the table lacks would fail every poll: say so before the run."""
        columns = [f.name for f in table.schema().fields]
        where = f"stages.{self.ctx.stage}"
        named = {f"{where}.tag_column": [self.settings.tag_column], f"{where}.fields": list(self.settings.fields)}
        if self.settings.order_column:
            named[f"{where}.order_column"] = [self.settings.order_column]
        for setting, names in named.items():
            missing = [n for n in names if n not in columns]
            if missing:
                raise ConfigError(
                    setting, missing if len(missing) > 1 else missing[0],
                    f"table {self.settings.table} has no such column", f"columns: {', '.join(columns)}",
                )  # fmt: skip
        self._tags.check(table.schema(), self.settings.table)
        if not self._tags.prunes:
            self.ctx.note(
                f"{where}.tag_regex has no literal start (^PREFIX): file statistics cannot skip other runs' files, "
                "so every data file a snapshot adds is read"
            )


class RestMetadata:
    """Conditional, snapshot-light loads of one table of a pyiceberg ``RestCatalog``.

    pyiceberg's ``refresh()`` asks ``loadTable`` for the whole metadata and validates every snapshot the table
    kept: the cost of a poll grows with history (benchmarks/iceberg_rest_cost.py). The REST spec lets a client do
    better, and Apache Iceberg's own server does both: ``snapshots=refs`` asks only for the snapshots branches
    and tags point at (the current one, usually), and the answer's ``ETag`` sent back in ``If-None-Match`` gets
    ``304 Not Modified`` while nothing was committed, so an idle poll transfers and parses nothing.

    A refs answer holds what the change feed needs when one snapshot was committed since the one it is at (the
    new current snapshot's parent is the feed's); after several commits the whole metadata is loaded, and only
    snapshots not handled before are validated (``MetadataReader``). Any answer but 200 or 304 falls back to
    pyiceberg's ``refresh()`` for that poll (it refreshes tokens and maps errors); a server without ETags costs a
    refs load per poll.
    """

    def __init__(self, table: Table, reader: MetadataReader, load: ProbeLoad | None = None) -> None:
        from pyiceberg.catalog.rest import Endpoints, RestCatalog

        catalog = table.catalog
        if not isinstance(catalog, RestCatalog):
            raise TypeError(f"not a REST catalog: {type(catalog).__name__}")
        self._catalog = catalog
        # pyiceberg builds the same URL for its own loadTable (private helpers, pinned pyiceberg)
        self._url = catalog.url(Endpoints.load_table, prefixed=True, **catalog._split_identifier_for_path(table.name()))
        self._reader = reader
        self._load = load or ProbeLoad()  # every request to the catalog, counted
        self._etag: str | None = None
        self._etag_location: str | None = None  # the metadata location the ETag was given with
        self.not_modified = 0  # 304 answers: nothing committed since the last load
        self.full_loads = 0  # loads of the whole metadata (several commits between polls)
        self.fallbacks = 0  # polls answered by pyiceberg's refresh()

    @classmethod
    def of(cls, table: Table, reader: MetadataReader, load: ProbeLoad | None = None) -> RestMetadata | None:
        """A loader for ``table`` when its catalog is a REST catalog, else None."""
        from pyiceberg.catalog.rest import RestCatalog

        return cls(table, reader, load) if isinstance(table.catalog, RestCatalog) else None

    def load(self, table: Table, since: int | None) -> tuple[Table, set[int]]:
        """The table as the catalog has it now, and the ids of the snapshots validated for it that are new
        (``since``: the snapshot the caller's change feed is at)."""
        # uncompressed: a server that compresses answers may tag the compressed form ("<etag>--gzip", Jetty's
        # compression) and then not recognise that tag in If-None-Match; a refs answer is small anyway
        headers = {"Accept-Encoding": "identity"}
        if self._etag is not None and self._etag_location == table.metadata_location:
            headers["If-None-Match"] = self._etag
        response = self._catalog._session.get(self._url, params={"snapshots": "refs"}, headers=headers)
        self._load.add("catalog_loads", len(response.content))
        if response.status_code == 304:
            self.not_modified += 1
            return table, set()
        if response.status_code != 200:
            self.fallbacks += 1
            self._load.add("catalog_loads")
            table.refresh()
            return CountingIO.counted(table, self._load), set()
        body: dict[str, Any] = json.loads(without_snapshot_log(response.content))
        metadata = body["metadata"]
        current = metadata.get("current-snapshot-id")
        snapshots = {s["snapshot-id"]: s for s in metadata.get("snapshots", [])}
        parent = snapshots.get(current, {}).get("parent-snapshot-id")
        if current not in (None, -1, since) and parent != since:
            self.full_loads += 1
            full = self._catalog._session.get(self._url)
            self._load.add("catalog_loads", len(full.content))
            full.raise_for_status()
            body = json.loads(without_snapshot_log(full.content))
            metadata = body["metadata"]
        location = body["metadata-location"]
        loaded, new = self._reader.parse_dict(metadata)
        self._etag, self._etag_location = response.headers.get("ETag"), location
        return Table(table.name(), loaded, location, table.io, table.catalog), new


def tag_filter(settings: IcebergSettings, lo: int, hi: int, where: str) -> TagFilter:
    """The canary rows of tags ``[lo, hi]`` in the stage's table, as its settings say the tag is written."""
    return TagFilter(settings.tag_column, lo, hi, pattern=settings.tag_pattern, regex=settings.tag_regex, where=where)


def open_table(settings: IcebergSettings, where: str) -> Table:
    """The table the settings name (``where``: their section, for errors): a one-line ``EndpointError`` when
    the catalog cannot be opened or the table is not there."""
    properties = dict(settings.catalog)
    uri = str(redact(properties.get("uri", settings.catalog_name)))
    if properties.get("type") == "sql":
        _require_sqlite_file(properties.get("uri", ""), f"{where}.catalog.uri")
        properties.setdefault("init_catalog_tables", "false")  # a reader never creates the catalog
    try:
        catalog: Catalog = load_catalog(settings.catalog_name, **properties)
    except Exception as exc:  # pyiceberg raises many kinds here; all mean "this catalog cannot be used"
        raise EndpointError(
            f"{where}.catalog", uri, f"cannot open the catalog ({type(exc).__name__}: {exc})", _fix(exc)
        ) from None
    try:
        return catalog.load_table(settings.table)
    except NoSuchTableError:
        raise EndpointError(
            f"{where}.table", settings.table, f"no such table in catalog {uri}",
            "has the pipeline created it yet? is the name right (and catalog_name the writer's)?",
        ) from None  # fmt: skip
    except Exception as exc:  # e.g. a SQLite file that holds no catalog
        raise EndpointError(
            f"{where}.catalog", uri, f"cannot read the catalog ({type(exc).__name__}: {exc})", _fix(exc)
        ) from None


def _fix(exc: Exception) -> str:
    if isinstance(exc, UnauthorizedError | ForbiddenError):  # a REST catalog refused the credentials
        return "check the catalog's credentials (catalog.token, or catalog.credential for OAuth2)"
    return "check the catalog properties (type, uri, warehouse)"


def _require_sqlite_file(uri: str, setting: str) -> None:
    """A SQLite catalog URI must name an existing file: opening a mistyped path would create a new,
    empty catalog and every canary would look lost."""
    if not uri.startswith("sqlite:///"):
        return
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if path in ("", ":memory:"):
        return
    if not Path(unquote(path)).is_file():
        raise ConfigError(
            setting,
            uri,
            "no catalog file there (a reader never creates one)",
            "check the path; the pipeline's writer creates the catalog",
        )
