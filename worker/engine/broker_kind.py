"""Which engine answers at a bootstrap address: Apache Kafka or Tansu.

Asked of the broker itself, from the API versions it advertises: every Apache Kafka since
0.11 serves OffsetForLeaderEpoch (API key 23), which Tansu does not. The answer picks the
broker profile (`Settings.profile`), so Tansu's workarounds never reach Apache Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from kafka import KafkaAdminClient

from worker.config import Settings

OFFSET_FOR_LEADER_EPOCH = 23
T = TypeVar("T")


@dataclass(frozen=True)
class BrokerFacts:
    kind: str  # "kafka" or "tansu"
    brokers: int  # how many brokers the cluster's metadata lists


def probe(bootstrap: str, timeout_s: float = 30.0) -> BrokerFacts:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="flyt-xledger-probe",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        brokers = admin.describe_cluster()["brokers"]
        # Raw keys: admin.api_versions() fails on a key newer than kafka-python knows.
        data = admin.get_broker_version_data(brokers[0]["broker_id"])
        versions = {int(k) for k in data.api_versions}
    finally:
        admin.close()
    kind = "kafka" if OFFSET_FOR_LEADER_EPOCH in versions else "tansu"
    return BrokerFacts(kind, len(brokers))


async def resolve(s: Settings, bootstrap: str) -> Settings:
    """`s` with its broker kind known: as configured, or as the broker says."""
    if s.broker_kind != "auto":
        return s
    facts = await in_daemon_thread(lambda: probe(bootstrap))
    return replace(s, broker_kind=facts.kind)


def in_daemon_thread(call: Callable[[], T]) -> asyncio.Future[T]:
    """`call()` in a daemon thread: a worker asked to stop while the broker does not
    answer exits without waiting for it (asyncio's own threads are waited for)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(done: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(done)

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:
            failure = exc
            settle(lambda: None if future.done() else future.set_exception(failure))
        else:
            settle(lambda: None if future.done() else future.set_result(result))

    threading.Thread(target=run, name="broker-probe", daemon=True).start()
    return future
