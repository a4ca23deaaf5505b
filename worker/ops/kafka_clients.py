"""The Kafka clients of the operator tools (kafka-python), built here and only here, each
through `worker.kafka_clients` (the broker and its TLS and SASL settings, one place for
every Kafka client of the project); a broker that cannot be reached is BrokerUnavailable,
said in one line."""

from __future__ import annotations

from typing import Any

from worker.kafka_clients import sync_clients
from worker.kafka_clients.connection import Bootstrap
from worker.kafka_clients.sync_clients import (
    BrokerError,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
)
from worker.ops.errors import BrokerUnavailable


def _where(bootstrap: Bootstrap) -> str:
    return bootstrap if isinstance(bootstrap, str) else bootstrap.bootstrap


def consumer(bootstrap: Bootstrap, timeout_s: float = 30.0, **extra: Any) -> KafkaConsumer:
    """A consumer outside any group (no group id, no commits): reading never moves the
    worker's group."""
    try:
        return sync_clients.consumer(
            bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=int(max(timeout_s, 5) * 1000) + 1000,
            **extra,
        )
    except (BrokerError, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {_where(bootstrap)}: {exc}") from None


def producer(bootstrap: Bootstrap, **extra: Any) -> KafkaProducer:
    """Every record acknowledged by all in-sync copies before it counts as sent."""
    try:
        return sync_clients.producer(bootstrap, acks="all", linger_ms=0, **extra)
    except (BrokerError, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {_where(bootstrap)}: {exc}") from None


def admin(bootstrap: Bootstrap) -> KafkaAdminClient:
    try:
        return sync_clients.admin(bootstrap)
    except (BrokerError, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {_where(bootstrap)}: {exc}") from None
