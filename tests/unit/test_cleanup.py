"""Cleanup on a real Iceberg table (a pyiceberg SqlCatalog in a temp folder): canary rows counted per run, one
delete commit by tag range, real trades and other runs untouched; the command's dry run and its errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField, StringType

from pipeline_check.backends.cleanup import Selection
from pipeline_check.backends.iceberg.cleanup import CLEANUP_PROPERTY, IcebergCleanup, delete, plan
from pipeline_check.backends.iceberg.probe import IcebergSettings
from pipeline_check.canary.tags import RunId
from pipeline_check.cli import main
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.errors import ConfigError
from pipeline_check.runs.cleanup import stage_cleanup

OLD, NEW = RunId(1_000_000), RunId(1_000_500)
SCHEMA = Schema(
    NestedField(1, "symbol", StringType(), required=True),
    NestedField(2, "trade_id", LongType(), required=True),
    NestedField(3, "note", StringType(), required=False),
)


def rows(ids: list[int]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"symbol": "CANARYUSDT" if i >= 2**62 else "BTCUSDT", "trade_id": i, "note": "x"} for i in ids],
        schema=SCHEMA.as_arrow(),
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A table holding real trades and canaries of two runs, some in files of their own, some mixed in; the
    pipeline.toml that names it."""
    catalog = SqlCatalog("local", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/warehouse")
    catalog.create_namespace("market")
    table = catalog.create_table("market.trades", schema=SCHEMA)
    table.append(rows([1, 2, 3, *(OLD.tag(s) for s in range(5))]))
    table.append(rows([NEW.tag(s) for s in range(7)]))
    table.append(rows([4, NEW.tag(7), 5]))
    path = tmp_path / "pipeline.toml"
    catalog_props = f'type = "sql", uri = "sqlite:///{tmp_path}/catalog.db", warehouse = "file://{tmp_path}/warehouse"'
    path.write_text(
        '[source]\ntype = "websocket"\nport = 1\n'
        '[stages.iceberg]\ntable = "market.trades"\ncatalog_name = "local"\n'
        f"catalog = {{ {catalog_props} }}\n"
    )
    return path


def iceberg_settings(config: PipelineConfig) -> tuple[IcebergSettings, str]:
    """The settings and section of the stage the cleanup command deletes from."""
    cleaner = stage_cleanup(config)
    assert isinstance(cleaner, IcebergCleanup)
    return cleaner.settings, cleaner.where


def ids(table: Table) -> list[int]:
    table.refresh()
    return sorted(table.scan(selected_fields=("trade_id",)).to_arrow().column("trade_id").to_pylist())


def test_plan_counts_canary_rows_per_run(config: Path) -> None:
    settings, where = iceberg_settings(load_config(config, {}))
    _, everything = plan(settings, where, Selection.every_canary())
    assert everything.rows_per_run == {OLD: 5, NEW: 8}
    _, one = plan(settings, where, Selection.of_run(str(NEW)))
    assert one.rows_per_run == {NEW: 8} and one.rows == 8 and one.table == "market.trades"


def test_delete_removes_exactly_the_runs_canaries(config: Path) -> None:
    settings, where = iceberg_settings(load_config(config, {}))
    table, found = plan(settings, where, Selection.of_run(str(NEW)))
    before = table.current_snapshot()
    done = delete(table, settings, found, where)
    assert (done.rows, done.left) == (8, 0)
    assert ids(table) == [1, 2, 3, 4, 5, *(OLD.tag(s) for s in range(5))]  # real trades and the other run stay
    # one commit: a delete snapshot drops the file of only canaries, an overwrite rewrites the mixed one
    assert before is not None
    new = [s for s in table.snapshots() if s.sequence_number > (before.sequence_number or 0)]
    assert new[0].parent_snapshot_id == before.snapshot_id and new[1].parent_snapshot_id == new[0].snapshot_id
    assert [s.summary.operation.value for s in new if s.summary] == ["delete", "overwrite"]
    assert all(s.summary is not None and s.summary[CLEANUP_PROPERTY] == str(NEW) for s in new)
    assert (done.operation, done.snapshot_id) == ("overwrite", new[-1].snapshot_id)
    # time travel still shows what was there
    assert len(table.scan(snapshot_id=before.snapshot_id).to_arrow()) == 18


def test_cli_dry_run_changes_nothing_and_apply_deletes(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cleanup", "-c", str(config), "--all-canaries"]) == 0
    out = capsys.readouterr().out
    assert "13 canary rows of 2 runs would be deleted (dry run; --apply deletes them)" in out
    assert f"{OLD}          5 rows" in out and f"{NEW}          8 rows" in out
    table = SqlCatalog("local", **_catalog(config)).load_table("market.trades")
    assert len(ids(table)) == 18
    assert main(["cleanup", "-c", str(config), "--all-canaries", "--apply"]) == 0
    assert "deleted 13 canary rows in snapshot" in capsys.readouterr().out
    assert ids(table) == [1, 2, 3, 4, 5]
    assert main(["cleanup", "-c", str(config), "--run", str(OLD), "--apply"]) == 0
    assert f"no canary rows of {OLD}" in capsys.readouterr().out


def _catalog(config: Path) -> dict[str, str]:
    settings, _ = iceberg_settings(load_config(config, {}))
    return {k: v for k, v in settings.catalog.items() if k != "type"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "run-xyz"], "--run='run-xyz' (str): is not a run id"),
        (["--run", "12345"], "--run='12345' (str): is not a run id"),
        ([], "give --run RUN_ID or --all-canaries"),
        (["--run", "run-1", "--all-canaries"], "give --run RUN_ID or --all-canaries"),
    ],
)
def test_bad_selections_exit_2(config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["cleanup", "-c", str(config), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_config_without_an_iceberg_stage_or_an_integer_tag_column(config: Path, tmp_path: Path) -> None:
    no_table = tmp_path / "no-table.toml"
    no_table.write_text('[source]\ntype = "websocket"\nport = 1\n[stages.kafka]\nbootstrap = "b:1"\ntopic = "t"\n')
    with pytest.raises(ConfigError, match="has no Iceberg stage"):
        iceberg_settings(load_config(no_table, {}))
    text_tag = tmp_path / "text-tag.toml"
    text_tag.write_text(
        config.read_text().replace('catalog_name = "local"', 'catalog_name = "local"\ntag_column = "note"')
    )
    settings, where = iceberg_settings(load_config(text_tag, {}))
    with pytest.raises(ConfigError, match=r"stages.iceberg.tag_column='note' .*is a string column of market.trades"):
        plan(settings, where, Selection.every_canary())
