from __future__ import annotations

import pytest

from pipeline_check.canary.tags import CANARY_BIT, EPOCH_S, MAX_RUN, MAX_SEQ, RunId, label, parse


@pytest.mark.parametrize("run", [0, 1, 0x1234_5678, MAX_RUN])
@pytest.mark.parametrize("seq", [0, 1, 999, MAX_SEQ])
def test_round_trip(run: int, seq: int) -> None:
    rid = RunId(run)
    tag = rid.tag(seq)
    assert 0 < tag < 2**63  # a positive int64
    assert rid.lo <= tag <= rid.hi
    assert parse(tag) == (rid, seq)
    assert rid.seq_of(tag) == seq
    assert label(tag) == f"run-{run:x}#{seq}"


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (RunId(5).tag(1), RunId(5).tag(2)),
        (RunId(5).tag(MAX_SEQ), RunId(6).tag(0)),
        (RunId(0).tag(0), RunId(MAX_RUN).tag(0)),
        (RunId.new(EPOCH_S + 10.0).tag(MAX_SEQ), RunId.new(EPOCH_S + 10.25).tag(0)),
    ],
)
def test_tags_grow_with_time(earlier: int, later: int) -> None:
    assert earlier < later


@pytest.mark.parametrize("value", [0, 1, 12_345_678, CANARY_BIT - 1, -1, -CANARY_BIT, 2**63 | CANARY_BIT, 2**64])
def test_non_canary_parses_to_none(value: int) -> None:
    assert parse(value) is None
    assert label(value) == str(value)


@pytest.mark.parametrize("other", [RunId(4).tag(MAX_SEQ), RunId(6).tag(0), 12_345, RunId(5).hi + 1])
def test_seq_of_rejects_other_runs(other: int) -> None:
    assert RunId(5).seq_of(other) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RunId(-1), "outside 0.."),
        (lambda: RunId(MAX_RUN + 1), "outside 0.."),
        (lambda: RunId(1).tag(-1), "sequence -1 outside"),
        (lambda: RunId(1).tag(MAX_SEQ + 1), f"sequence {MAX_SEQ + 1} outside"),
        (lambda: RunId.new(EPOCH_S - 1), "outside 0.."),
    ],
)
def test_out_of_range(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_run_id_from_wall_clock() -> None:
    rid = RunId.new(EPOCH_S + 12.5)
    assert rid.value == 1250
    assert rid.started_at == pytest.approx(EPOCH_S + 12.5)
    assert str(rid) == "run-4e2"
