"""Which engine answers at a bootstrap address: Apache Kafka or Tansu.

Asked of the broker itself, from the API versions it advertises: every Apache Kafka since
0.11 serves OffsetForLeaderEpoch (API key 23), which Tansu does not. The answer picks the
broker profile (`Settings.profile`), so Tansu's workarounds never reach Apache Kafka.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from kafka import KafkaAdminClient

from worker.config import Settings

OFFSET_FOR_LEADER_EPOCH = 23


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
    facts = await asyncio.to_thread(probe, bootstrap)
    return replace(s, broker_kind=facts.kind)
