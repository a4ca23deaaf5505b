"""The Kafka clients of the operator tools (kafka-python), built here and only here: the
connection settings every ops client shares (the broker, and where issue 27 adds TLS and
SASL) are in `_connection`, one place for all three kinds."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from worker.ops.errors import BrokerUnavailable


def _connection(bootstrap: str) -> dict[str, Any]:
    """What every client needs to reach the cluster."""
    return {"bootstrap_servers": bootstrap}


def consumer(bootstrap: str, timeout_s: float = 30.0, **extra: Any) -> KafkaConsumer:
    """A consumer outside any group (no group id, no commits): reading never moves the
    worker's group."""
    try:
        return KafkaConsumer(
            **_connection(bootstrap),
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=int(max(timeout_s, 5) * 1000) + 1000,
            **extra,
        )
    except (KafkaError, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from None


def producer(bootstrap: str, **extra: Any) -> KafkaProducer:
    """Every record acknowledged by all in-sync copies before it counts as sent."""
    try:
        return KafkaProducer(**_connection(bootstrap), acks="all", linger_ms=0, **extra)
    except (KafkaError, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from None


def admin(bootstrap: str) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**_connection(bootstrap))
    except (KafkaError, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from None
