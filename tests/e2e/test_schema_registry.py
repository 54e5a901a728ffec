"""The schema registry stand-in (compose/services/registry.py) as a process, driven through pipeline-check's
Schema Registry client and Avro codec."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline_check.backends.kafka.codecs import (
    AvroCodec,
    RegisteredSchema,
    RegistryError,
    SchemaRegistryClient,
    UnknownSchemaError,
    load_schema,
    subject_for,
    to_comparable,
    trade_record,
)
from tests.e2e.helpers import trades, wait_for
from tests.support.registry import RegistryAdmin

pytestmark = [pytest.mark.e2e]

COMPOSE = Path(__file__).parents[2] / "compose"
TRADE = load_schema(COMPOSE / "schemas" / "trade.avsc")
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def evolved(schema: dict[str, Any], **field: Any) -> dict[str, Any]:
    return {**schema, "fields": [*schema["fields"], field]}


def unique_subject() -> str:
    """Tests share a registry and isolate by subject."""
    return subject_for(f"trades.{uuid.uuid4().hex[:8]}")


class StandIn:
    """``python -m services.registry`` on a free port, its log in ``tmp``; ``stop`` ends it with SIGTERM."""

    COMMAND = (sys.executable, "-m", "services.registry")

    def __init__(self, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = tmp / "registry" / "state.json"
        self.log = tmp / "registry.log"
        self.env = {"REGISTRY_PORT": str(self.port), "REGISTRY_STATE_FILE": str(self.state), **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StandIn:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.COMMAND,
                cwd=COMPOSE,
                env=self._environ(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self._healthy, 60, f"registry stand-in healthy on {self.url}; log: {self.log}")
        return self

    def run_until_exit(self) -> subprocess.CompletedProcess[str]:
        """A start that is expected to fail: its exit code and output."""
        return subprocess.run(
            self.COMMAND, cwd=COMPOSE, env=self._environ(), capture_output=True, text=True, timeout=60
        )

    def _environ(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", **self.env}

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"stand-in exited: {self.log.read_text()}"
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; the exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
            return None


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    stand_in = StandIn(tmp_path_factory.mktemp("registry"))
    try:
        yield stand_in.start()
    finally:
        stand_in.stop()


@pytest.fixture
def client(registry: StandIn) -> Iterator[RegistryAdmin]:
    with RegistryAdmin(registry.url) as c:
        yield c


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[StandIn]:
    """A stand-in of one test, for tests that change its config or restart it."""
    stand_in = StandIn(tmp_path)
    try:
        yield stand_in
    finally:
        stand_in.stop()


def test_it_says_it_is_a_stand_in_and_answers_like_confluent(registry: StandIn) -> None:
    root = httpx.get(registry.url + "/")
    assert root.status_code == 200 and root.headers["content-type"] == CONTENT_TYPE
    assert "stand-in" in root.json()["description"] and "Confluent-compatible subset" in root.json()["description"]
    missing = httpx.get(f"{registry.url}/subjects/{unique_subject()}/versions")
    assert missing.status_code == 404 and missing.headers["content-type"] == CONTENT_TYPE
    assert missing.json()["error_code"] == 40401
    subject = unique_subject()
    httpx.post(f"{registry.url}/subjects/{subject}/versions", json={"schema": json.dumps(TRADE)}).raise_for_status()
    bad_version = httpx.get(f"{registry.url}/subjects/{subject}/versions/zero")
    assert bad_version.status_code == 422 and bad_version.json()["error_code"] == 42202
    no_version = httpx.get(f"{registry.url}/subjects/{subject}/versions/2")
    assert no_version.status_code == 404 and no_version.json() == {
        "error_code": 40402,
        "message": "Version 2 not found.",
    }
    no_route = httpx.get(f"{registry.url}/nowhere")
    assert no_route.status_code == 404 and no_route.json() == {"error_code": 404, "message": "HTTP 404 Not Found"}


def test_register_is_idempotent_and_ids_are_global(registry: StandIn, client: RegistryAdmin) -> None:
    subject, other = unique_subject(), unique_subject()
    schema_id = client.register(subject, TRADE)
    assert client.register(subject, json.dumps(TRADE, indent=4)) == schema_id  # same schema, other whitespace
    assert client.register(subject, dict(reversed(TRADE.items()))) == schema_id  # ... other key order
    assert client.register(other, TRADE) == schema_id  # ids are global: the same schema, the same id
    assert httpx.get(f"{registry.url}/subjects/{subject}/versions").json() == [1]
    assert {subject, other} <= set(httpx.get(f"{registry.url}/subjects").json())


def test_lookup_by_id_and_latest_version(client: RegistryAdmin) -> None:
    subject = unique_subject()
    schema_id = client.register(subject, evolved(TRADE, name="lookup", type="string", default=subject))
    assert json.loads(client.schema_by_id(schema_id))["fields"][-1] == {
        "name": "lookup",
        "type": "string",
        "default": subject,
    }
    latest = client.latest(subject)
    assert latest == RegisteredSchema(subject=subject, version=1, id=schema_id, schema=latest.schema)
    assert json.loads(latest.schema) == json.loads(client.schema_by_id(schema_id))


def test_compatible_evolution_registers_a_new_version_that_reads_the_old_data(client: RegistryAdmin) -> None:
    subject = unique_subject()
    v1 = client.register(subject, TRADE)
    v2_schema = evolved(TRADE, name="venue", type="string", default="binance")
    verdict = client.check_compatibility(subject, v2_schema)
    assert verdict.is_compatible and verdict.messages == ()
    v2 = client.register(subject, v2_schema)
    assert v2 != v1 and client.latest(subject).version == 2 and client.latest(subject).id == v2
    # a v2 reader meets v1 records: the writer schema comes from the registry by the id in the frame
    sent = trades("CANARYUSDT", 5)
    frames = [AvroCodec(TRADE, v1).encode(trade_record(t)) for t in sent]
    reader = AvroCodec(v2_schema, v2, client)
    held = [to_comparable(reader.decode(f)) for f in frames]
    assert [h["venue"] for h in held] == ["binance"] * 5
    assert [(h["t"], str(h["p"]), h["T"]) for h in held] == [(t["t"], t["p"], t["T"]) for t in sent]


@pytest.mark.parametrize(
    ("change", "incompatibility"),
    [
        ({"name": "venue", "type": "string"}, "READER_FIELD_MISSING_DEFAULT_VALUE"),  # the new reader cannot fill it
        ({"name": "t", "type": "string"}, "TYPE_MISMATCH"),  # the trade id as a string
    ],
)
def test_incompatible_evolution_is_refused(
    registry: StandIn, client: RegistryAdmin, change: dict[str, Any], incompatibility: str
) -> None:
    subject = unique_subject()
    client.register(subject, TRADE)
    fields = [f for f in TRADE["fields"] if f["name"] != change["name"]]
    schema = {**TRADE, "fields": [*fields, change]}
    verdict = client.check_compatibility(subject, schema)
    assert not verdict.is_compatible
    assert any(incompatibility in m and "BACKWARD" in m for m in verdict.messages), verdict.messages
    with pytest.raises(RegistryError) as refused:
        client.register(subject, schema)
    assert (refused.value.status, refused.value.error_code) == (409, 409)
    message = str(refused.value)
    assert message.startswith(f"schema_registry.url='{registry.url}' (endpoint): subject '{subject}': ")
    assert "HTTP 409 (error_code 409): Schema being registered is incompatible" in message
    assert incompatibility in message and "give new fields a default" in message
    assert client.latest(subject).version == 1


def test_compatibility_level_is_the_registry_config(own_registry: StandIn) -> None:
    own_registry.start()
    with RegistryAdmin(own_registry.url) as client:
        subject = unique_subject()
        client.register(subject, TRADE)
        no_default = evolved(TRADE, name="venue", type="string")
        assert not client.check_compatibility(subject, no_default).is_compatible
        put = httpx.put(f"{own_registry.url}/config", json={"compatibility": "forward"})
        assert put.json() == {"compatibility": "FORWARD"}
        assert httpx.get(f"{own_registry.url}/config").json() == {"compatibilityLevel": "FORWARD"}
        # FORWARD: the old schema must read the new data, which it can (it skips the new field)
        assert client.check_compatibility(subject, no_default).is_compatible
        assert client.register(subject, no_default) > 0
        bad = httpx.put(f"{own_registry.url}/config", json={"compatibility": "SIDEWAYS"})
        assert bad.status_code == 422 and bad.json()["error_code"] == 42203


def test_unknown_subject_and_id_are_named(registry: StandIn, client: RegistryAdmin) -> None:
    subject = unique_subject()
    with pytest.raises(RegistryError, match=rf"subject '{subject}': .*error_code 40401\): Subject '{subject}' not"):
        client.latest(subject)
    with pytest.raises(RegistryError, match=r"schema id 99999: .*error_code 40403"):
        client.schema_by_id(99_999)
    frame = b"\x00" + (99_999).to_bytes(4, "big") + AvroCodec(TRADE, 1).encode(trade_record(trades("X", 1)[0]))[5:]
    with pytest.raises(UnknownSchemaError, match="schema id 99999 in the frame is unknown to the registry"):
        AvroCodec(TRADE, 1, client).decode(frame)


def test_an_invalid_schema_is_refused_with_42201(client: RegistryAdmin) -> None:
    with pytest.raises(RegistryError, match=r"error_code 42201\): .*money") as refused:
        client.register(unique_subject(), {"type": "record", "name": "T", "fields": [{"name": "a", "type": "money"}]})
    assert refused.value.status == 422


def test_a_restart_keeps_ids_versions_and_config(own_registry: StandIn) -> None:
    own_registry.start()
    subject = unique_subject()
    v2_schema = evolved(TRADE, name="venue", type="string", default="binance")
    with SchemaRegistryClient(own_registry.url) as client:
        ids = [client.register(subject, TRADE), client.register(subject, v2_schema)]
        httpx.put(f"{own_registry.url}/config", json={"compatibility": "NONE"}).raise_for_status()
    assert own_registry.stop() == 0  # SIGTERM: a clean exit
    own_registry.start()
    with SchemaRegistryClient(own_registry.url) as client:
        assert json.loads(client.schema_by_id(ids[0])) == TRADE
        assert client.latest(subject) == RegisteredSchema(subject, 2, ids[1], client.schema_by_id(ids[1]))
        assert client.register(subject, TRADE) == ids[0]  # known: no new version, the same id
        assert client.latest(subject).version == 2
    assert httpx.get(f"{own_registry.url}/config").json() == {"compatibilityLevel": "NONE"}


@pytest.mark.parametrize(
    ("env", "good", "bad"),
    [
        ({"REGISTRY_BASIC_AUTH": "canary:s3cret"}, {"username": "canary", "password": "s3cret"}, {}),
        ({"REGISTRY_BEARER_TOKEN": "tok-123"}, {"token": "tok-123"}, {"token": "tok-456"}),
    ],
)
def test_credentials_are_sent_and_a_refusal_names_them(
    tmp_path: Path, env: dict[str, str], good: dict[str, str], bad: dict[str, str]
) -> None:
    stand_in = StandIn(tmp_path, **env)
    try:
        stand_in.start()
        with SchemaRegistryClient(stand_in.url, **good) as client:
            assert client.register("authed-value", TRADE) == 1
        with SchemaRegistryClient(stand_in.url, **bad) as client, pytest.raises(RegistryError) as refused:
            client.latest("authed-value")
        assert refused.value.status == 401
        assert "check the registry credentials" in str(refused.value)
        assert "s3cret" not in str(refused.value) and "tok-" not in str(refused.value)
    finally:
        stand_in.stop()


def test_a_registry_that_does_not_answer_is_one_clear_error() -> None:
    url = f"http://user:pw@127.0.0.1:{free_port()}"  # nothing listens there now
    with SchemaRegistryClient(url, setting="stages.kafka.registry.url") as client, pytest.raises(RegistryError) as err:
        client.latest("trades-value")
    assert err.value.status is None
    assert str(err.value).startswith(f"stages.kafka.registry.url='http://127.0.0.1:{url.rsplit(':', 1)[1]}' (endpoint)")
    assert "the registry does not answer (ConnectError" in str(err.value) and "pw" not in str(err.value)


@pytest.mark.parametrize(
    ("env", "state", "code", "line"),
    [
        (
            {"REGISTRY_COMPATIBILITY": "sideways"},
            None,
            2,
            "configuration error: REGISTRY_COMPATIBILITY='SIDEWAYS' (env): must be one of NONE, BACKWARD,",
        ),
        ({"REGISTRY_BASIC_AUTH": "no-colon"}, None, 2, "REGISTRY_BASIC_AUTH=<set> (env): must be user:password"),
        ({}, '{"schemas": [', 1, "not a registry state file (JSONDecodeError"),
    ],
)
def test_a_bad_setting_stops_the_start_with_one_line(
    tmp_path: Path, env: dict[str, str], state: str | None, code: int, line: str
) -> None:
    stand_in = StandIn(tmp_path, **env)
    if state is not None:
        stand_in.state.parent.mkdir(parents=True)
        stand_in.state.write_text(state)
    done = stand_in.run_until_exit()
    assert done.returncode == code, done.stdout + done.stderr
    errors = [x for x in done.stdout.splitlines() if " ERROR " in x]
    assert len(errors) == 1 and line in errors[0], done.stdout
    assert "Traceback" not in done.stdout + done.stderr
