"""The broker for integration tests: Apache Kafka (testcontainers) where a Docker engine
answers, Tansu otherwise. The run's header and summary say which was used."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from worker.config import Settings


@dataclass(frozen=True)
class Broker:
    kind: str  # "apache-kafka" or "tansu"
    bootstrap: str

    def settings(self, **overrides: object) -> Settings:
        """Worker settings suited to this broker (Tansu joins groups after session/2)."""
        base = Settings(bootstrap=self.bootstrap, metrics_port=None)
        if self.kind == "tansu":
            base = base.embedded()
        else:
            base = replace(
                base, session_timeout_s=10.0, heartbeat_interval_s=1.0, rebalance_timeout_s=10.0
            )
        return replace(base, **overrides)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        """The same settings as FLYT_* variables, for worker processes."""
        s = self.settings()
        return {
            "FLYT_BOOTSTRAP_SERVERS": self.bootstrap,
            "FLYT_SESSION_TIMEOUT_S": str(s.session_timeout_s),
            "FLYT_HEARTBEAT_INTERVAL_S": str(s.heartbeat_interval_s),
            "FLYT_REBALANCE_TIMEOUT_S": str(s.rebalance_timeout_s),
            "FLYT_ONE_RECORD_BATCHES": "1" if s.one_record_batches else "0",
        }


def docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return False
    if shutil.which("docker") is None and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


_USED: list[str] = []


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            _USED.append("apache-kafka (testcontainers)")
            yield Broker("apache-kafka", kafka.get_bootstrap_server())
        return
    from worker.stream.broker import EmbeddedBroker

    with EmbeddedBroker() as tansu:
        _USED.append("tansu (embedded, memory)")
        yield Broker("tansu", tansu.bootstrap)


def pytest_report_header(config: pytest.Config) -> str:
    if docker_answers():
        return "integration broker: Apache Kafka via testcontainers (a Docker engine answers)"
    return "integration broker: Tansu, embedded (no Docker engine answers)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _USED:
        terminalreporter.write_line(f"integration tests ran against: {', '.join(_USED)}")


def free_port() -> int:
    from worker.stream.broker import free_port as fp

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
