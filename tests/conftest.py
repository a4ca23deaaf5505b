"""The brokers for integration tests: Tansu and Apache Kafka, both real. The run's header
and summary say which ran, and say plainly when Apache Kafka was skipped and why."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from worker.config import Settings


@dataclass(frozen=True)
class Broker:
    kind: str  # "kafka" (Apache Kafka) or "tansu"
    bootstrap: str
    brokers: int = 1
    cluster: Any = field(default=None, compare=False)  # a KafkaCluster started here: kill/restart

    def settings(self, **overrides: object) -> Settings:
        """Worker settings suited to this broker: its profile, with shorter sessions on
        Apache Kafka so that a killed worker's partitions move on within seconds."""
        base = Settings(bootstrap=self.bootstrap, metrics_port=None, broker_kind=self.kind)
        if self.kind == "kafka":
            base = replace(
                base,
                replication_factor=min(3, self.brokers),
                min_insync_replicas=min(2, self.brokers),
                session_timeout_s=10.0,
                heartbeat_interval_s=1.0,
                # Longer than a hand-over: one Xledger request deadline plus its flush.
                rebalance_timeout_s=25.0,
            )
        return replace(base, **overrides)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        """The same settings as FLYT_* variables, for worker processes."""
        p = self.settings().profile()
        return {
            "FLYT_BOOTSTRAP_SERVERS": self.bootstrap,
            "FLYT_BROKER_KIND": self.kind,
            "FLYT_REPLICATION_FACTOR": str(p.replication_factor),
            "FLYT_MIN_INSYNC_REPLICAS": str(p.min_insync_replicas),
            "FLYT_SESSION_TIMEOUT_S": str(p.session_timeout_s),
            "FLYT_HEARTBEAT_INTERVAL_S": str(p.heartbeat_interval_s),
            "FLYT_REBALANCE_TIMEOUT_S": str(p.rebalance_timeout_s),
        }


def kafka_missing() -> str | None:
    """Why Apache Kafka cannot run here, or None."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found: Apache Kafka runs from Maven Central jars"
    return None


_USED: list[str] = []
_SKIPPED: set[str] = set()


def require_kafka() -> None:
    """Skip where Apache Kafka cannot run, and say so; in CI (FLYT_REQUIRE_KAFKA=1) fail."""
    why = kafka_missing()
    if why is None:
        return
    # CI must run them: there a missing tool is a failure, not a skip.
    if os.environ.get("FLYT_REQUIRE_KAFKA") == "1":
        pytest.fail(f"Apache Kafka tests cannot run: {why}")
    _SKIPPED.add(why)
    pytest.skip(f"Apache Kafka tests skipped: {why}")


@pytest.fixture(scope="session", params=["tansu", "kafka"])
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    """Every integration test runs on both engines: Tansu (embedded) and Apache Kafka
    (one broker, KRaft, from Maven Central jars)."""
    if request.param == "tansu":
        from worker.devenv.tansu import EmbeddedBroker

        with EmbeddedBroker() as tansu:
            _USED.append("tansu (embedded, memory)")
            yield Broker("tansu", tansu.bootstrap)
        return
    yield from _kafka(1, tmp_path_factory)


@pytest.fixture(scope="session")
def kafka3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Apache Kafka with three brokers (3 copies, 2 in sync), shared by the tests that need
    production's replication: a broker killed mid-flow, hand-overs between workers."""
    yield from _kafka(3, tmp_path_factory)


def docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return False
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


def _kafka(brokers: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if brokers == 1 and docker_answers():  # testcontainers wherever a Docker engine exists
        from testcontainers.kafka import KafkaContainer

        from worker.devenv.kafka_cluster import kafka_version

        with KafkaContainer(f"apache/kafka:{kafka_version()}").with_kraft() as kafka:
            _USED.append(f"apache-kafka {kafka_version()} (testcontainers)")
            yield Broker("kafka", kafka.get_bootstrap_server())
        return
    require_kafka()
    from worker.devenv.kafka_cluster import KafkaCluster

    logs = tmp_path_factory.mktemp(f"kafka-{brokers}")
    with KafkaCluster(brokers=brokers, log_dir=logs) as cluster:
        _USED.append(f"apache-kafka ({brokers} broker{'s' if brokers > 1 else ''}, KRaft)")
        yield Broker("kafka", cluster.bootstrap, brokers, cluster)


_PROMETHEUS_SKIPPED: set[str] = set()


def prometheus_tool(name: str) -> str:
    """The path of promtool or prometheus (Debian's prometheus package); skipped where
    missing, and a failure in CI (FLYT_REQUIRE_PROMETHEUS=1, set by .ci/run)."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} not found: apt-get install prometheus"
        if os.environ.get("FLYT_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"Prometheus tests cannot run: {why}")
        _PROMETHEUS_SKIPPED.add(why)
        pytest.skip(f"Prometheus tests skipped: {why}")
    return path


def pytest_report_header(config: pytest.Config) -> str:
    why = kafka_missing()
    kafka = (
        "Apache Kafka (KRaft, Maven Central jars)" if why is None else f"not Apache Kafka ({why})"
    )
    return f"integration brokers: Tansu (embedded) and {kafka}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _USED:
        terminalreporter.write_line(f"integration tests ran against: {', '.join(_USED)}")
    for why in sorted(_SKIPPED):
        terminalreporter.write_line(f"APACHE KAFKA TESTS SKIPPED: {why}", yellow=True, bold=True)
    for why in sorted(_PROMETHEUS_SKIPPED):
        terminalreporter.write_line(f"PROMETHEUS TESTS SKIPPED: {why}", yellow=True, bold=True)


def free_port() -> int:
    from worker.devenv.tansu import free_port as fp

    return fp()


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYT_", "XLEDGER_"))}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
