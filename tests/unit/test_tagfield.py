"""Tags read out of records whose ids a stage reformatted: tag_pattern, tag_regex, plain fields."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipeline_check.canary.tag_readers import TagSettings, tag_reader
from pipeline_check.canary.tags import RunId

TAG = RunId(123_456).tag(7)


def read(record: Any, **settings: str) -> int | None:
    return tag_reader(TagSettings(**settings), "stages.api")(record)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "settings", "tag"),
    [
        ({"t": TAG}, {"tag_field": "t"}, TAG),
        ({"t": str(TAG)}, {"tag_field": "t"}, TAG),
        ({"t": float(TAG)}, {"tag_field": "t"}, None),  # a float cannot hold an int64 tag exactly
        ({"t": True}, {"tag_field": "t"}, None),
        ({"meta": {"id": TAG}}, {"tag_field": "meta.id"}, TAG),
        ({"trade_id": f"BINANCE-{TAG}"}, {"tag_field": "trade_id", "tag_pattern": "BINANCE-{tag}"}, TAG),
        ({"trade_id": f"BINANCE-{TAG}-x"}, {"tag_field": "trade_id", "tag_pattern": "BINANCE-{tag}"}, None),
        ({"trade_id": f"COINBASE-{TAG}"}, {"tag_field": "trade_id", "tag_pattern": "BINANCE-{tag}"}, None),
        ({"trade_id": TAG}, {"tag_field": "trade_id", "tag_pattern": "BINANCE-{tag}"}, None),
        ({"trade_id": f"a.b*{TAG}"}, {"tag_field": "trade_id", "tag_pattern": "a.b*{tag}"}, TAG),  # literal text
        ({"trade_id": f"axb*{TAG}"}, {"tag_field": "trade_id", "tag_pattern": "a.b*{tag}"}, None),
        ({"ref": f"order canary-{TAG} filled"}, {"tag_field": "ref", "tag_regex": r"canary-(\d+)"}, TAG),
        ({"ref": f"x{TAG}y"}, {"tag_field": "ref", "tag_regex": r"x(?P<tag>\d+)y"}, TAG),
        ({"ref": "canary-"}, {"tag_field": "ref", "tag_regex": r"canary-(\d*)"}, None),
    ],
)
def test_tag_read_from_a_record(record: Any, settings: dict[str, str], tag: int | None) -> None:
    assert read(record, **settings) == tag


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tag_pattern": "BINANCE-"}, "must hold {tag} once"),
        ({"tag_pattern": "{tag}-{tag}"}, "must hold {tag} once"),
        ({"tag_pattern": "{id}"}, "must hold {tag} once"),
        ({"tag_pattern": "BINANCE-{tag"}, "is not a pattern"),
        ({"tag_regex": "canary-("}, "is not a regular expression"),
        ({"tag_regex": r"canary-\d+"}, "needs one group"),
        ({"tag_regex": r"(a)(\d+)"}, "needs one group"),
        ({"tag_pattern": "B-{tag}", "tag_regex": r"B-(\d+)"}, "set one of them"),
        ({"tag_field": "a[", "tag_pattern": "B-{tag}"}, "JMESPath"),
    ],
)
def test_bad_tag_settings_are_refused_at_load(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TagSettings(**{"tag_field": "trade_id", **settings})  # type: ignore[arg-type]
