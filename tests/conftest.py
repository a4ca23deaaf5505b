"""The brokers for integration tests, as fixtures: Tansu and Apache Kafka, both real
(`tests/brokers.py`). The run's header and summary say which ran, and say plainly when
Apache Kafka was skipped and why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers import SKIPPED, USED, Broker, kafka_brokers, kafka_missing


@pytest.fixture(scope="session", params=["tansu", "kafka"])
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    """Every integration test runs on both engines: Tansu (embedded) and Apache Kafka
    (one broker, KRaft, from Maven Central jars)."""
    if request.param == "tansu":
        from worker.devenv.tansu import EmbeddedBroker

        with EmbeddedBroker() as tansu:
            USED.append("tansu (embedded, memory)")
            yield Broker("tansu", tansu.bootstrap)
        return
    yield from kafka_brokers(1, tmp_path_factory)


@pytest.fixture(scope="session")
def kafka3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Apache Kafka with three brokers (3 copies, 2 in sync), shared by the tests that need
    production's replication: a broker killed mid-flow, hand-overs between workers."""
    yield from kafka_brokers(3, tmp_path_factory)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`: two processes), the tests on three Kafka brokers
    all go to one process, so one cluster of three JVMs starts, not one per process."""
    for item in items:
        if "kafka3" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("kafka3"))


def pytest_report_header(config: pytest.Config) -> str:
    why = kafka_missing()
    kafka = (
        "Apache Kafka (KRaft, Maven Central jars)" if why is None else f"not Apache Kafka ({why})"
    )
    return f"integration brokers: Tansu (embedded) and {kafka}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Under pytest-xdist the fixtures ran in other processes: what they used and skipped
    # is read from the reports that came back (a test id names its broker).
    ran = {
        kind
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        for kind in ("tansu", "kafka")
        if f"[{kind}" in getattr(report, "nodeid", "")
        or f"-{kind}]" in getattr(report, "nodeid", "")
    }
    used = USED or sorted(ran)
    if used:
        terminalreporter.write_line(f"integration tests ran against: {', '.join(used)}")
    skipped = set(SKIPPED)
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple) and "Apache Kafka tests skipped" in str(longrepr[-1]):
            skipped.add(str(longrepr[-1]).split("Apache Kafka tests skipped: ", 1)[-1])
    for why in sorted(skipped):
        terminalreporter.write_line(f"APACHE KAFKA TESTS SKIPPED: {why}", yellow=True, bold=True)
