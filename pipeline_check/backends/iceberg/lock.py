"""The ``iceberg`` lock: a table on a SQL catalog can be held locked through its SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

from pipeline_check.backends.iceberg.probe import IcebergSettings
from pipeline_check.core.plugins import PluginSettings


class CatalogLock:
    Settings: ClassVar[type[PluginSettings]] = IcebergSettings

    @classmethod
    def lockable(cls, settings: IcebergSettings) -> bool:
        return str(settings.catalog.get("type", "")) == "sql"

    @classmethod
    def file(cls, settings: IcebergSettings) -> Path | None:
        uri = str(settings.catalog.get("uri", "")) if cls.lockable(settings) else ""
        if not uri.startswith("sqlite:///"):
            return None
        return Path(unquote(uri.removeprefix("sqlite:///").split("?", 1)[0]))
