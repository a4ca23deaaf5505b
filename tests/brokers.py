"""The integration tests' brokers: Tansu and Apache Kafka, both real, and the settings a
worker gets for each. `tests/conftest.py` offers them as fixtures (`broker`, `kafka3`);
the run's header and summary say which ran, and say plainly when Apache Kafka was skipped
and why."""

from __future__ import annotations

import os
import shutil
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


USED: list[str] = []  # which brokers this run used, for its summary
SKIPPED: set[str] = set()  # why Apache Kafka's tests were skipped


def require_kafka() -> None:
    """Skip where Apache Kafka cannot run, and say so; in CI (FLYT_REQUIRE_KAFKA=1) fail."""
    why = kafka_missing()
    if why is None:
        return
    # CI must run them: there a missing tool is a failure, not a skip.
    if os.environ.get("FLYT_REQUIRE_KAFKA") == "1":
        pytest.fail(f"Apache Kafka tests cannot run: {why}")
    SKIPPED.add(why)
    pytest.skip(f"Apache Kafka tests skipped: {why}")


def docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return False
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


def kafka_brokers(brokers: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Apache Kafka with this many brokers, for as long as the generator runs."""
    if brokers == 1 and docker_answers():  # testcontainers wherever a Docker engine exists
        from testcontainers.kafka import KafkaContainer

        from worker.devenv.kafka_cluster import kafka_version

        with KafkaContainer(f"apache/kafka:{kafka_version()}").with_kraft() as kafka:
            USED.append(f"apache-kafka {kafka_version()} (testcontainers)")
            yield Broker("kafka", kafka.get_bootstrap_server())
        return
    require_kafka()
    from worker.devenv.kafka_cluster import KafkaCluster

    logs = tmp_path_factory.mktemp(f"kafka-{brokers}")
    with KafkaCluster(brokers=brokers, log_dir=logs) as cluster:
        USED.append(f"apache-kafka ({brokers} broker{'s' if brokers > 1 else ''}, KRaft)")
        yield Broker("kafka", cluster.bootstrap, brokers, cluster)
