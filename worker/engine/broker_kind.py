"""Which engine answers at a bootstrap address: Apache Kafka or Tansu.

Asked of the broker itself, from the API versions it advertises: every Apache Kafka since
0.11 serves OffsetForLeaderEpoch (API key 23), which Tansu does not. The answer picks the
broker profile (`Settings.profile`), so Tansu's workarounds never reach Apache Kafka. The
question is asked as every client connects (`worker.kafka_clients.probe`, aiokafka): a
certificate or password the broker refuses is found here, once, before any client starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from worker.config import Settings
from worker.kafka_clients.connection import Bootstrap, connection
from worker.kafka_clients.probe import probe as connect_and_ask

OFFSET_FOR_LEADER_EPOCH = 23


@dataclass(frozen=True)
class BrokerFacts:
    kind: str  # "kafka" or "tansu"
    brokers: int  # how many brokers the cluster's metadata lists


async def probe(bootstrap: Bootstrap, timeout_s: float = 30.0) -> BrokerFacts:
    """Raises KafkaRefused (TLS or SASL refused: a setting to fix) or KafkaUnreachable."""
    facts = await connect_and_ask(bootstrap, timeout_s)
    kind = "kafka" if OFFSET_FOR_LEADER_EPOCH in facts.api_keys else "tansu"
    return BrokerFacts(kind, facts.brokers)


async def resolve(s: Settings, bootstrap: Bootstrap) -> Settings:
    """`s` with its broker kind known: as configured, or as the broker says. The broker is
    asked either way: the connection is checked before any client starts."""
    facts = await probe(connection(bootstrap, s.kafka))
    if s.broker_kind != "auto":
        return s
    return replace(s, broker_kind=facts.kind)
