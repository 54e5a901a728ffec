"""Contracts: the [contract] model, comparing columns and records with it, the check's outcome, and the
snapshot's TOML loading back as the same contract."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline_check.config import load_config
from pipeline_check.core.errors import ConfigError
from pipeline_check.runs.contract import to_toml
from pipeline_check.verdict.contract_diff import (
    compare_columns,
    compare_records,
    contract_result,
    record_fields,
    type_fits,
)
from pipeline_check.verdict.contract_spec import StageContract, column_type, json_type
from pipeline_check.verdict.figures import ContractFigures, Difference
from pipeline_check.verdict.status import Status


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("decimal(18, 8)", "decimal(18,8)"),
        ("DECIMAL(38,0)", "decimal(38,0)"),
        ("timestamptz", "timestamp(us, UTC)"),
        ("timestamp(us, utc)", "timestamp(us, UTC)"),
        ("timestamp", "timestamp(us)"),
        ("timestamp_ns", "timestamp(ns)"),
        ("timestamptz_ns", "timestamp(ns, UTC)"),
        ("bigint", "long"),
        ("int", "int"),
        ("fixed[16]", "fixed[16]"),
        ("double", "double"),
        ("list<string>", "list<string>"),
    ],
)
def test_column_types_have_one_spelling(text: str, canonical: str) -> None:
    assert column_type(text) == canonical


def test_unknown_types_are_errors() -> None:
    with pytest.raises(ValueError, match="'money' is not an Iceberg type"):
        column_type("money")
    with pytest.raises(ValueError, match="'text' is not a JSON type"):
        json_type("text")
    assert json_type("null | Integer") == "integer|null"


def test_a_contract_section_loads_with_shorthands(tmp_path: Path) -> None:
    spec = StageContract.model_validate(
        {"columns": {"price": "decimal(18, 8)", "id": {"type": "bigint", "required": True}}, "sample": 5}
    )
    assert spec.columns["price"].type == "decimal(18,8)" and spec.columns["price"].required is None
    assert spec.columns["id"].type == "long" and spec.columns["id"].required is True
    with pytest.raises(ValidationError, match="is not an Iceberg type"):
        StageContract.model_validate({"columns": {"p": "money"}})
    with pytest.raises(ValidationError):
        StageContract.model_validate({"status": [{"path": "no-slash", "status": 200}]})


def test_a_bad_contract_in_pipeline_toml_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        '[source]\ntype = "kafka"\n[stages.kafka]\nbootstrap = "127.0.0.1:9"\ntopic = "t"\n'
        '[contract.kafka]\nfields = { p = "text" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert "contract.kafka.fields.p.type='text'" in str(caught.value) and "\n" not in str(caught.value)


TABLE = {"symbol": ("string", True), "price": ("double", False), "seen": ("timestamp(us, UTC)", False)}


def test_columns_are_compared_by_type_and_requiredness() -> None:
    spec = StageContract.model_validate(
        {"columns": {"symbol": {"type": "string", "required": True}, "price": "decimal(18,8)", "qty": "long"}}
    )
    diffs = [d.text for d in compare_columns("iceberg", spec.columns, TABLE, exact=False)]
    assert diffs == [
        "iceberg column price: expected decimal(18,8), found double",
        "iceberg column qty: expected long, found no such column",
    ]
    required = StageContract.model_validate({"columns": {"price": {"type": "double", "required": True}}})
    assert [d.text for d in compare_columns("iceberg", required.columns, TABLE, exact=True)] == [
        "iceberg column price: expected double required, found double optional",
        "iceberg column symbol: expected no such column (exact = true), found string required",
        "iceberg column seen: expected no such column (exact = true), found timestamp(us, UTC) optional",
    ]


def test_records_are_compared_field_by_field() -> None:
    spec = StageContract.model_validate(
        {"fields": {"p": "string", "t": "integer", "m": {"type": "boolean", "required": False}, "x.y": "number"}}
    )
    records = [
        ("offset 1", {"p": "1.5", "t": 1, "x": {"y": 2}}),
        ("offset 2", {"p": 1.5, "t": 2, "m": True, "x": {"y": 2.5}}),
        ("offset 3", {"p": "2.5", "m": "yes", "x": {}}),
        ("offset 4", "not json"),
    ]
    assert [d.text for d in compare_records("kafka", spec.fields, records, exact=False)] == [
        'kafka record offset 4: expected a JSON object, found "not json"',
        "kafka field p: expected string, found number in 1 of 4 records, e.g. offset 2: 1.5",
        "kafka field t: expected integer (required), found missing in 1 of 4 records, e.g. offset 3",
        'kafka field m: expected boolean, found string in 1 of 4 records, e.g. offset 3: "yes"',
        "kafka field x.y: expected number (required), found missing in 1 of 4 records, e.g. offset 3",
    ]
    assert type_fits(3, "number") and not type_fits(True, "integer") and type_fits(None, "integer|null")


def test_the_contract_check_outcome() -> None:
    checked = ("iceberg: 3 columns",)
    diff = Difference("iceberg", "column price", "decimal(18,8)", "double")
    failed = contract_result(ContractFigures((diff,), checked, not_applicable=("api GET / (key: none): no key",)))
    assert (failed.status, failed.observed, failed.threshold, failed.observed_text) == (
        Status.FAILED, 1.0, "contract", "1 difference",
    )  # fmt: skip
    assert failed.detail.splitlines() == [
        "1 difference from the contract:",
        "iceberg column price: expected decimal(18,8), found double",
        "not applicable: api GET / (key: none): no key",
    ]
    assert contract_result(ContractFigures((), checked)).status == Status.PASSED
    unchecked = contract_result(ContractFigures((), checked, unchecked=("kafka: the topic holds no record",)))
    assert unchecked.status == Status.INCONCLUSIVE and "not checked: kafka" in unchecked.detail


def test_a_snapshot_loads_back_as_the_contract_it_shows() -> None:
    records = [("r1", {"p": "1.5", "t": 1, "m": None}), ("r2", {"p": "2", "t": 2, "m": True, "odd key": [1]})]
    tables = {
        "iceberg": {"columns": {n: {"type": t, "required": r} for n, (t, r) in TABLE.items()}},
        "kafka": {"fields": record_fields(records)},
        "api": {"fields": {"trade_id": {"type": "integer", "required": True}}, "status": [
            {"path": '/v1/trades?symbol=BTCUSDT&q="x"', "status": 422, "key": "configured"},
        ]},
    }  # fmt: skip
    text = to_toml(tables, "pipeline.toml")
    loaded = tomllib.loads(text)["contract"]
    kafka = StageContract.model_validate(loaded["kafka"])
    assert kafka.fields["m"].type == "boolean|null" and kafka.fields["odd key"].required is False
    assert compare_records("kafka", kafka.fields, records, exact=True) == []
    iceberg = StageContract.model_validate(loaded["iceberg"])
    assert compare_columns("iceberg", iceberg.columns, TABLE, exact=True) == []
    api = StageContract.model_validate(loaded["api"])
    assert api.status[0].path == '/v1/trades?symbol=BTCUSDT&q="x"' and api.status[0].status == 422
