"""Every JSON report the tests produce follows the bundled schema (``pipeline_check/reporting/report.schema.json``):
``validate_report`` checks one document; the ``reports_follow_the_schema`` fixture (autouse in the unit and e2e
conftests) checks each one a :class:`~pipeline_check.reporting.json.JsonReporter` renders in the test process."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import pytest

from pipeline_check.reporting.json import JsonReporter, report_schema


@functools.cache
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(report_schema())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate_report(doc: Mapping[str, Any]) -> None:
    """``AssertionError`` naming every place ``doc`` breaks the report schema."""
    errors = sorted(validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    problems = [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors]
    assert not problems, "the report breaks report.schema.json:\n" + "\n".join(problems)


@pytest.fixture(autouse=True)
def reports_follow_the_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    render = JsonReporter.render

    def checked(self: JsonReporter, *args: Any) -> str:
        text = render(self, *args)
        validate_report(json.loads(text))
        return text

    monkeypatch.setattr(JsonReporter, "render", checked)
    yield
