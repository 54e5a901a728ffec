"""Toxiproxy as `make setup` builds it, driven over its API: every toxic a fault needs, on a TCP echo
server, and Kafka reached through the broker's INGEST listener (which advertises the proxy's address) so
faults on the proxy reach clients."""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from pipeline_check.core.errors import ConfigError, EndpointError, StackError
from pipeline_check.core.polling import Deadline
from pipeline_check.faults.toxiproxy import ToxiproxyError
from pipeline_check.pytest_plugin import free_ports
from pipeline_check.stack.local import LocalStack
from pipeline_check.stack.spec import StackSpec, load_stack
from tests.support import toxiproxy as toxiproxy_module
from tests.support.polling import apoll
from tests.support.toxiproxy import Proxy, ToxiproxyAdmin, ToxiproxyServer, find_binary

pytestmark = [pytest.mark.e2e, pytest.mark.resilience]
STACK_FILE = Path(__file__).parents[2] / "compose" / "stack.toml"
LATENCY_MS = 300


# -- a TCP echo server behind a proxy ---------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:
            return  # the reset_peer toxic resets the server's side too


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def toxiproxy() -> Iterator[ToxiproxyAdmin]:
    with ToxiproxyServer() as server:
        yield server.api


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def proxy(toxiproxy: ToxiproxyAdmin, echo: str) -> Iterator[Proxy]:
    created = toxiproxy.create_proxy("echo", "127.0.0.1:0", echo)
    yield created
    toxiproxy.delete_proxy(created.name)


def connect(proxy: Proxy, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def roundtrip(proxy: Proxy, payload: bytes) -> tuple[bytes, float]:
    """Send ``payload`` through the proxy and read its echo; the echo and the seconds it took. The send
    runs on a thread so a throttled way back cannot stall it."""
    with connect(proxy) as sock:
        began = time.monotonic()
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = bytearray()
        while len(received) < len(payload) and (chunk := sock.recv(65536)):
            received += chunk
        took = time.monotonic() - began
        sender.join()
    return bytes(received), took


def test_server_runs_the_proxy_and_stops_on_exit(toxiproxy: ToxiproxyAdmin, proxy: Proxy, echo: str) -> None:
    assert toxiproxy.version()
    listed = toxiproxy.proxies()[proxy.name]
    assert (listed.listen, listed.upstream, listed.enabled, listed.toxics) == (proxy.listen, echo, True, ())
    assert proxy.port != 0, "a :0 listen address gets the port the server bound"
    assert roundtrip(proxy, b"ping")[0] == b"ping"

    port = free_ports(["api"])["api"]
    with ToxiproxyServer(port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert server.api.proxies() == {}
    with ToxiproxyAdmin(f"http://127.0.0.1:{port}") as gone, pytest.raises(EndpointError, match="no answer"):
        gone.version()


def test_latency_adds_at_least_the_latency(
    toxiproxy: ToxiproxyAdmin, proxy: Proxy, record_property: Callable[[str, object], None]
) -> None:
    _, baseline = roundtrip(proxy, b"ping")
    toxiproxy.latency(proxy.name, LATENCY_MS)
    echoed, took = roundtrip(proxy, b"ping")
    record_property("echo_baseline_s", round(baseline, 4))
    record_property("echo_with_latency_s", round(took, 4))
    assert echoed == b"ping"
    assert took >= LATENCY_MS / 1000, f"a {LATENCY_MS} ms latency toxic, yet the echo took {took * 1000:.1f} ms"


def test_cut_makes_a_read_time_out_and_removing_it_restores_traffic(toxiproxy: ToxiproxyAdmin, proxy: Proxy) -> None:
    cut = toxiproxy.cut(proxy.name)
    assert [t.kind for t in toxiproxy.proxy(proxy.name).toxics] == ["timeout"]
    with connect(proxy, timeout=1.0) as sock:
        sock.sendall(b"ping")
        with pytest.raises(TimeoutError):  # neither an answer nor a close: a black hole
            sock.recv(4)
    toxiproxy.remove_toxic(proxy.name, cut)
    assert roundtrip(proxy, b"pong")[0] == b"pong"


def test_reset_peer_resets_the_connection(toxiproxy: ToxiproxyAdmin, proxy: Proxy) -> None:
    toxiproxy.reset_peer(proxy.name)
    with connect(proxy) as sock:
        sock.sendall(b"ping")
        with pytest.raises(ConnectionResetError):
            sock.recv(4)


def test_bandwidth_limits_a_transfer(
    toxiproxy: ToxiproxyAdmin, proxy: Proxy, record_property: Callable[[str, object], None]
) -> None:
    rate_kb_s, size = 100, 200_000
    toxiproxy.bandwidth(proxy.name, rate_kb_s)
    payload = os.urandom(size)
    echoed, took = roundtrip(proxy, payload)
    expected = size / (rate_kb_s * 1000)
    record_property("transfer_s", round(took, 3))
    assert echoed == payload
    assert took >= expected, f"{size} bytes at {rate_kb_s} KB/s need {expected:.2f} s, took {took:.2f} s"


def test_slicer_still_delivers_every_byte(toxiproxy: ToxiproxyAdmin, proxy: Proxy) -> None:
    toxiproxy.slicer(proxy.name, average_size=64, size_variation=32, delay_us=50)
    payload = os.urandom(64_000)
    assert roundtrip(proxy, payload)[0] == payload


def test_disable_refuses_connections_until_enabled(toxiproxy: ToxiproxyAdmin, proxy: Proxy) -> None:
    assert not toxiproxy.disable(proxy.name).enabled
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    assert toxiproxy.enable(proxy.name).enabled
    assert roundtrip(proxy, b"ping")[0] == b"ping"


def test_reset_enables_every_proxy_and_removes_every_toxic(toxiproxy: ToxiproxyAdmin, proxy: Proxy) -> None:
    toxiproxy.latency(proxy.name, LATENCY_MS, stream="upstream")
    toxiproxy.bandwidth(proxy.name, 10)
    toxiproxy.disable(proxy.name)
    assert len(toxiproxy.proxy(proxy.name).toxics) == 2
    toxiproxy.reset()
    after = toxiproxy.proxy(proxy.name)
    assert (after.enabled, after.toxics) == (True, ())


def test_api_errors_name_the_proxy_the_toxic_and_what_the_server_said(toxiproxy: ToxiproxyAdmin, proxy: Proxy) -> None:
    toxiproxy.latency(proxy.name, 10, name="slow")
    with pytest.raises(
        ToxiproxyError, match=r"toxic 'slow' \(latency, downstream\) on proxy 'echo'.*409: toxic already"
    ):
        toxiproxy.latency(proxy.name, 20, name="slow")
    with pytest.raises(ToxiproxyError, match=r"proxy 'nowhere' answered HTTP 404: proxy not found") as missing:
        toxiproxy.cut("nowhere")
    assert missing.value.status == 404
    with pytest.raises(ToxiproxyError, match=r"answered HTTP 400: invalid toxic type"):
        toxiproxy.add_toxic(proxy.name, "flood", {})
    with pytest.raises(ToxiproxyError, match=r"removing toxic 'gone' from proxy 'echo'.*404: toxic not found"):
        toxiproxy.remove_toxic(proxy.name, "gone")
    with pytest.raises(ConfigError, match=r"toxicity=1.5 \(float\): must be between 0 and 1"):
        toxiproxy.cut(proxy.name, toxicity=1.5)
    with pytest.raises(ConfigError, match=r"rate_kb_s=0 \(int\): must be >= 1"):
        toxiproxy.bandwidth(proxy.name, 0)


def test_a_missing_binary_says_make_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toxiproxy_module, "PROJECT_BINARY", tmp_path / "toxiproxy-server")
    monkeypatch.delenv(toxiproxy_module.BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"toxiproxy-server not found .*run `make setup`"):
        ToxiproxyServer().start()
    monkeypatch.setenv(toxiproxy_module.BINARY_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"PIPELINE_CHECK_TOXIPROXY='.*nope' \(str\): is not an executable file"):
        find_binary()


# -- Kafka through a proxied listener ----------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSpec]:
    """A broker of the stack's own configuration (PLAINTEXT and the services' proxied listeners) on free ports."""
    ports = free_ports(list(load_stack(STACK_FILE).ports))
    stack = LocalStack(load_stack(STACK_FILE, run_dir=tmp_path_factory.mktemp("stack"), ports=ports))
    try:
        stack.start("kafka")
        yield stack.spec
    finally:
        stack.down()


@pytest.fixture
def kafka_proxy(toxiproxy: ToxiproxyAdmin, kafka: StackSpec) -> Iterator[Proxy]:
    """Toxiproxy on the address the INGEST listener advertises, forwarding to that listener."""
    ports = kafka.ports
    created = toxiproxy.create_proxy(
        "kafka", f"127.0.0.1:{ports['toxiproxy_ingest']}", f"127.0.0.1:{ports['kafka_ingest']}"
    )
    yield created
    toxiproxy.delete_proxy(created.name)


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def timed_send(producer: AIOKafkaProducer, topic: str, value: bytes) -> float:
    began = time.monotonic()
    await producer.send_and_wait(topic, value)
    return time.monotonic() - began


async def read_values(bootstrap: str, topic: str, wanted: set[bytes], timeout: float) -> set[bytes]:
    """The values of ``topic`` read from the start until ``wanted`` are all seen or ``timeout`` passes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10_000)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        seen: set[bytes] = set()
        deadline = Deadline.after(timeout)
        while not wanted <= seen and not deadline.expired():
            batches = await consumer.getmany(timeout_ms=500)
            seen.update(r.value for records in batches.values() for r in records if r.value is not None)
        return seen
    finally:
        await consumer.stop()


def test_kafka_through_the_proxy_feels_latency_and_cuts(
    kafka: StackSpec, kafka_proxy: Proxy, toxiproxy: ToxiproxyAdmin, record_property: Callable[[str, object], None]
) -> None:
    plain = f"127.0.0.1:{kafka.ports['kafka']}"
    proxied = kafka_proxy.listen
    topic = "faults.toxiproxy"

    async def exercise() -> None:
        await create_topic(plain, topic)
        producer = AIOKafkaProducer(bootstrap_servers=proxied, request_timeout_ms=5_000)
        await producer.start()
        try:
            brokers = {(b.host, b.port) for b in producer.client.cluster.brokers()}
            assert brokers == {("127.0.0.1", kafka_proxy.port)}, f"metadata must name the proxy, not {brokers}"
            baseline = [await timed_send(producer, topic, b"before-%d" % i) for i in range(5)]
            wanted = {b"before-%d" % i for i in range(5)}
            assert await read_values(proxied, topic, wanted, 30) >= wanted

            slow = toxiproxy.latency(kafka_proxy.name, LATENCY_MS)
            slowed = [await timed_send(producer, topic, b"slow-%d" % i) for i in range(5)]
            toxiproxy.remove_toxic(kafka_proxy.name, slow)
            added_ms = (statistics.median(slowed) - statistics.median(baseline)) * 1000
            record_property("kafka_produce_baseline_ms", round(statistics.median(baseline) * 1000, 1))
            record_property("kafka_added_latency_ms", round(added_ms, 1))
            assert min(slowed) >= LATENCY_MS / 1000, (
                f"a {LATENCY_MS} ms latency toxic added {added_ms:.1f} ms (median); "
                f"fastest produce {min(slowed) * 1000:.1f} ms"
            )

            # requests vanish on the way to the broker: nothing is written, nothing answers
            cut = toxiproxy.cut(kafka_proxy.name, stream="upstream")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(producer.send_and_wait(topic, b"during-cut"), 3)
            toxiproxy.remove_toxic(kafka_proxy.name, cut)
            restored = time.monotonic()

            async def delivered() -> bool:
                try:
                    await asyncio.wait_for(producer.send_and_wait(topic, b"after-cut"), 5)
                except (TimeoutError, KafkaError):
                    return False
                return True

            assert await apoll(delivered, 30, initial=0.2), "no produce succeeded within 30 s of removing the cut"
            record_property("kafka_recovered_after_cut_s", round(time.monotonic() - restored, 2))
            assert b"after-cut" in await read_values(proxied, topic, {b"after-cut"}, 30)
        finally:
            await producer.stop()

    asyncio.run(exercise())
