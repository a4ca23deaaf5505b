"""Apache Kafka from Maven Central's jars (worker/devenv/kafka_cluster.py) and `python -m
worker kafka`: a record round trip, a broker killed and restarted, and no JVM outliving
the process that started it (SIGTERM or SIGINT stops them; SIGKILL of the parent kills
them)."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from worker.devenv.kafka_cluster import (
    POM,
    KafkaCluster,
    KafkaUnavailable,
    kafka_classpath,
    kafka_version,
)
from worker.devenv.tansu import free_port

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

_MISSING = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
if _MISSING and os.environ.get("FLYT_REQUIRE_KAFKA") != "1":
    pytest.skip(
        f"Apache Kafka tests need {' and '.join(_MISSING)} on PATH (not found)",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def jars() -> str:
    return kafka_classpath()  # once, before any timed start


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster(brokers=1, log_dir=tmp_path_factory.mktemp("kafka-logs")) as k:
        yield k


def test_the_version_is_the_poms() -> None:
    assert re.fullmatch(r"4\.\d+\.\d+", kafka_version())
    assert f"<kafka.version>{kafka_version()}</kafka.version>" in POM.read_text()


def test_one_broker_round_trip(cluster: KafkaCluster) -> None:
    assert cluster.bootstrap == f"127.0.0.1:{cluster.ports[0]}"
    assert cluster.alive(1)
    topic = f"t-{uuid.uuid4().hex[:8]}"
    create_topic(cluster.bootstrap, topic)
    produce(cluster.bootstrap, topic, b"k", b"hello")
    assert consume(cluster.bootstrap, topic, 1) == [(b"k", b"hello")]


def test_a_killed_broker_restarts_on_its_storage(cluster: KafkaCluster) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    create_topic(cluster.bootstrap, topic)
    produce(cluster.bootstrap, topic, b"k", b"before")
    cluster.kill(1)
    assert not cluster.alive(1)
    cluster.restart(1)
    assert cluster.alive(1)
    produce(cluster.bootstrap, topic, b"k", b"after")
    assert consume(cluster.bootstrap, topic, 2) == [(b"k", b"before"), (b"k", b"after")]


def test_missing_tools_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaUnavailable, match="java not found"):
        KafkaCluster().start()
    monkeypatch.setenv("FLYT_KAFKA_CACHE", str(tmp_path / "cache"))  # nothing resolved there
    with pytest.raises(KafkaUnavailable, match="mvn not found"):
        kafka_classpath()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_command_and_its_jvm(sig: signal.Signals) -> None:
    port = free_port()
    with kafka_command(port) as (proc, line):
        assert line == f"Apache Kafka {kafka_version()}, 1 broker(s), bootstrap 127.0.0.1:{port}"
        jvms = kafka_jvms(port)
        assert jvms, "no broker JVM found for the command"
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`worker kafka` still running 20 s after {sig.name}: {kafka_jvms(port)}")
        assert rc == 0, proc.stderr.read().decode() if proc.stderr else rc
        assert gone(jvms, port, within_s=1.0), kafka_jvms(port)
        assert storage_dirs(jvms)
        assert not any(d.exists() for d in storage_dirs(jvms)), "its storage was left behind"


def test_a_killed_command_takes_its_jvm_along() -> None:
    port = free_port()
    with kafka_command(port) as (proc, _):
        jvms = kafka_jvms(port)
        assert jvms, "no broker JVM found for the command"
        proc.kill()
        proc.wait(timeout=5)
        assert gone(jvms, port, within_s=10.0), "the JVM outlived its parent (pdeathsig)"


# --- helpers ---------------------------------------------------------------------------


@contextmanager
def kafka_command(port: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m worker kafka --port P` and its first stdout line; whatever it leaves
    (the command, a JVM, its storage) is removed on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "kafka", "--brokers", "1", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    jvms: dict[int, list[str]] = {}
    try:
        line = read_line(proc, timeout_s=90)
        jvms = kafka_jvms(port)
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
        jvms |= kafka_jvms(port)
        for pid in kafka_jvms(port):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        gone(jvms, port, within_s=10.0)
        for d in storage_dirs(jvms):
            shutil.rmtree(d, ignore_errors=True)


def read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    fd, buf, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout_s
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            err = proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else ""
            pytest.fail(f"`worker kafka` printed no line within {timeout_s:.0f} s: {err}")
        buf += chunk
    return buf.split(b"\n", 1)[0].decode()


def kafka_jvms(port: int) -> dict[int, list[str]]:
    """Running broker JVMs of the cluster whose node 1 listens on `port` (by their storage
    folder's name), with their command lines."""
    found: dict[int, list[str]] = {}
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            args = (proc_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "kafka.Kafka" in args and any(f"/flyt-kafka-{port}-" in a for a in args):
            found[int(proc_dir.name)] = args
    return found


def gone(jvms: dict[int, list[str]], port: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while set(jvms) & set(kafka_jvms(port)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def storage_dirs(jvms: dict[int, list[str]]) -> list[Path]:
    """The temporary folders the JVMs' server.properties are in (a cluster's root)."""
    props = {Path(a) for args in jvms.values() for a in args if a.endswith("server.properties")}
    return sorted({p.parent.parent for p in props})


def create_topic(bootstrap: str, topic: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=20)
    try:
        producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def consume(bootstrap: str, topic: str, n: int) -> list[tuple[bytes, bytes]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got += [(r.key, r.value) for r in records]
    finally:
        consumer.close()
    return got
