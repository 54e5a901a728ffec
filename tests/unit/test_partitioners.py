"""Key partitioners as their clients define them, inferring the one a topic uses, canary symbols that cover every
partition under it, and coverage judged from where canaries landed when they could not be steered."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline_check.backends.kafka.partitioners import ALL, HASHES, configured, crc32, fnv1a, infer, murmur2
from pipeline_check.canary.coverage import MAX_SYMBOLS, Placement, covering_symbols, landing
from pipeline_check.config import load_config
from pipeline_check.runs.driver import run
from pipeline_check.verdict.status import Status
from tests.support import memory

SETTING = "stages.kafka.partitioner"


def test_murmur2_is_the_java_clients() -> None:
    # org.apache.kafka.common.utils.UtilsTest: Utils.murmur2 of these bytes, as a signed int
    for key, java in [(b"21", -973932308), (b"foobar", -790332482), (b"abc", 479470107)]:
        assert murmur2(key, 1 << 31) == java & 0x7FFFFFFF


def test_crc32_is_librdkafkas_consistent_partitioner() -> None:
    assert crc32(b"123456789", 1 << 32) == 0xCBF43926  # the CRC-32 check value
    assert crc32(b"BTCUSDT", 40) == zlib.crc32(b"BTCUSDT") % 40


def test_fnv1a_is_saramas_default_and_librdkafkas() -> None:
    # librdkafka's unittest_fnv1a (values from Go's hash/fnv): the absolute value of the signed 32-bit hash
    vectors = [(b"kafka", 0xD33C4E1), (b"giberish123456789", 0x77A58295), (b"1234", 0x23BDD03), (b"", 0x7EE3623B)]
    for key, expected in vectors:
        assert fnv1a(key, 1 << 32) == expected
    # Sarama: int32(hash) % n, negated when negative: the same partition for a hash with its sign bit set
    h = 0x811C9DC5
    for byte in b"BTCUSDT":
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    signed = h - (1 << 32) if h & 0x80000000 else h
    go_mod = int(np.fmod(signed, 7))  # Go's % truncates toward zero
    assert fnv1a(b"BTCUSDT", 7) == (-go_mod if go_mod < 0 else go_mod)


def placed(name: str, keys: int, partitions: int, per_key: int = 10) -> list[tuple[bytes | None, int]]:
    hashed = HASHES[name]
    return [(k, hashed(k, partitions)) for i in range(keys) for k in [f"SYM{i}USDT".encode()] * per_key]


@pytest.mark.parametrize("name", ["murmur2", "crc32", "fnv1a"])
def test_auto_finds_the_partitioner_the_records_follow_and_says_how_sure(name: str) -> None:
    found = infer(placed(name, 37, 40), 40, SETTING)
    assert [n for n, _ in found.places] == [name] and not found.unsteered
    assert f"{name}: 370 of 370 keyed records agree" in found.finding
    assert "(37 keys over 40 partitions" in found.finding and "1 in 10^59" in found.finding
    others = [n for n in HASHES if n != name]
    assert all(f"{other}: " in found.finding for other in others)


def test_a_few_misplaced_records_do_not_hide_the_partitioner() -> None:
    records = placed("crc32", 30, 12)
    records[:10] = [(k, (p + 1) % 12) for k, p in records[:10]]  # e.g. written before the topic grew
    found = infer(records, 12, SETTING)
    assert [n for n, _ in found.places] == ["crc32"] and "crc32: 290 of 300" in found.finding


def test_keys_too_few_to_tell_partitioners_apart_steer_for_every_one_that_fits() -> None:
    key = next(f"K{i}".encode() for i in range(1000) if crc32(f"K{i}".encode(), 3) == murmur2(f"K{i}".encode(), 3))
    found = infer([(key, crc32(key, 3))] * 5, 3, SETTING)
    assert {n for n, _ in found.places} >= {"crc32", "murmur2"} and "fit the topic's few keys alike" in found.finding


def test_an_empty_topic_is_too_few_records_and_canaries_cover_every_partitioner() -> None:
    found = infer([], 40, SETTING)
    assert found.places == ALL
    assert found.unsteered.startswith("too few keyed records to tell the partitioner (the topic holds no record)")
    assert "coverage is judged from where they landed" in found.unsteered


def test_keyless_records_mean_canaries_cannot_be_steered() -> None:
    found = infer([(None, i % 6) for i in range(60)], 6, SETTING)
    assert found.places == () and "none of the topic's 60 newest records carries a key" in found.unsteered
    assert covering_symbols("CANARYUSDT", found) == ("CANARYUSDT",)


def test_keys_spread_over_partitions_are_round_robin() -> None:
    records = [(f"S{i % 5}".encode(), i % 8) for i in range(200)]
    found = infer(records, 8, SETTING)
    assert found.places == ()
    spread = "keys do not decide the partition (5 of 5 keys seen more than once sit on several partitions)"
    assert spread in found.unsteered


def test_keys_placed_by_no_known_hash_are_keys_the_validator_does_not_control() -> None:
    records = [(k, len(k) % 9) for i in range(50) for k in [f"ID{i * 7919}".encode()]]
    found = infer(records, 9, SETTING)
    assert "no known partitioner places the topic's keys" in found.unsteered
    assert "keys the validator does not control" in found.unsteered


def test_configured_partitioners() -> None:
    assert [n for n, _ in configured("consistent_random", 40, SETTING).places] == ["crc32"]
    robin = configured("round_robin", 40, SETTING)
    assert robin.places == () and "round_robin: the producer ignores keys" in robin.unsteered


@pytest.mark.parametrize("partitions", [3, 40, 200])
def test_symbols_cover_every_partition_under_each_partitioner(partitions: int) -> None:
    placement = Placement(partitions, ALL)
    symbols = covering_symbols("CANARYUSDT", placement)
    assert symbols[0] == "CANARYUSDT" and len(symbols) <= MAX_SYMBOLS
    fitting = ALL[: max(1, MAX_SYMBOLS // partitions)]
    for _, place in fitting:
        assert {place(s, partitions) for s in symbols} == set(range(partitions))
    one = covering_symbols("CANARYUSDT", Placement(partitions, ALL[1:2]))
    assert len(one) == partitions and {crc32(s.encode(), partitions) for s in one} == set(range(partitions))


def test_landing_checks_canaries_landed_where_their_symbol_was_steered() -> None:
    placement = Placement(40, ALL[1:2])  # crc32
    symbols = covering_symbols("CANARYUSDT", placement)
    index = (np.arange(400) % len(symbols)).astype(np.uint8)
    where = np.array([crc32(symbols[i].encode(), 40) for i in index], np.int32)
    assert landing("kafka", placement, symbols, index, where) == ""
    where[5] = -1  # not seen: not judged
    assert landing("kafka", placement, symbols, index, where) == ""
    random.seed(3)
    shuffled = np.array([random.randrange(40) for _ in index], np.int32)
    caveat = landing("kafka", placement, symbols, index, shuffled)
    assert "canaries did not land where crc32 puts their symbol" in caveat
    assert "something the validator does not control" in caveat and "set stages.kafka.partitioner" in caveat


# -- the engine: symbols chosen under the stage's placement, coverage judged from the landings ---------------

CONFIG = """
[source]
type = "memory"

[stages.kafka]
type = "memory"
delay = 0.005
shards = 40
{kafka}

[load]
count = 400
rate = 2000
settle = 0
drain_timeout = "1s"

[sla]
thresholds = ["lost == 0", "coverage == 100%"]
"""


def coverage_of(tmp_path: Path, kafka: str) -> tuple[Status, str]:
    memory.register()
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG.format(kafka=kafka))
    outcome = run(load_config(path, {}))
    (check,) = [r for r in outcome.finished.results if r.threshold == "coverage == 100%"]
    return check.status, check.detail


def test_canaries_steered_by_the_partitioner_the_probe_finds_cover_every_partition(tmp_path: Path) -> None:
    status, detail = coverage_of(tmp_path, 'landing = "crc32"\nclaims = "crc32"')
    assert status == Status.PASSED and detail == "kafka: 40 of 40 partitions reached", detail


def test_canaries_steered_for_the_wrong_partitioner_fail_coverage_and_say_why(tmp_path: Path) -> None:
    status, detail = coverage_of(tmp_path, 'landing = "crc32"\nclaims = "murmur2"')
    assert status == Status.FAILED
    assert detail.startswith("no canary in kafka partitions ") and "did not land where murmur2 puts" in detail


def test_a_round_robin_producer_is_judged_by_where_canaries_landed(tmp_path: Path) -> None:
    status, detail = coverage_of(tmp_path, 'claims = "round_robin"')
    assert status == Status.PASSED and "40 of 40 partitions reached" in detail
    assert "round_robin: the producer ignores keys" in detail and "judged from where they landed" in detail
