"""Reading whole topics for the operator tools (kafka-python).

Assigned partitions and no group id: inspecting a topic never joins, moves or commits a
consumer group, so it cannot disturb the worker. Each read takes the partitions' ends
when it starts and reads up to them: what arrives later is left for the next command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker import kafka_clients
from worker.kafka_clients import Bootstrap, TopicPartition
from worker.kafka_clients import BrokerError as KafkaError
from worker.ops.errors import BrokerUnavailable, TopicMissing


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def position(self) -> str:
        return f"{self.partition}@{self.offset}"

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def json(self) -> dict[str, Any] | None:
        """The value as a JSON object, or None where it is not one."""
        if self.value is None:
            return None
        try:
            body = json.loads(self.value)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        return body if isinstance(body, dict) else None


def _consumer(bootstrap: Bootstrap, timeout_s: float) -> kafka_clients.KafkaConsumer:
    try:
        return kafka_clients.consumer(
            bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=int(max(timeout_s, 5) * 1000) + 1000,
        )
    except (KafkaError, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from None


def read_topics(
    bootstrap: Bootstrap,
    topics: Iterable[str],
    *,
    optional: Iterable[str] = (),
    timeout_s: float = 30.0,
) -> dict[str, list[Record]]:
    """Every record now in each topic, in (partition, offset) order per topic.

    A missing topic raises TopicMissing, except those in `optional`, which read as empty
    (the audit topic before the first replay, for instance)."""
    wanted = list(dict.fromkeys([*topics, *optional]))
    may_miss = set(optional)
    consumer = _consumer(bootstrap, timeout_s)
    try:
        try:
            # The list of every topic: asking for one by name could make a broker that
            # auto-creates topics create it.
            existing = consumer.topics()
        except KafkaError as exc:
            raise BrokerUnavailable(f"the broker at {bootstrap} did not answer: {exc}") from None
        missing = [t for t in wanted if t not in existing and t not in may_miss]
        if missing:
            raise TopicMissing(missing, bootstrap)
        out: dict[str, list[Record]] = {t: [] for t in wanted}
        tps = [
            TopicPartition(t, p)
            for t in wanted
            if t in existing
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            return out
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"reading {', '.join(sorted({tp.topic for tp in remaining}))} from "
                    f"{bootstrap} took longer than {timeout_s:.0f} s"
                )
            batch = consumer.poll(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                out[tp.topic].extend(
                    Record(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.timestamp,
                        r.key,
                        r.value,
                        list(r.headers or []),
                    )
                    for r in records
                )
            remaining = {tp for tp in remaining if consumer.position(tp) < end[tp]}
        for records in out.values():
            records.sort(key=lambda r: (r.partition, r.offset))
        return out
    finally:
        consumer.close()


def read_topic(bootstrap: Bootstrap, topic: str, timeout_s: float = 30.0) -> list[Record]:
    return read_topics(bootstrap, [topic], timeout_s=timeout_s)[topic]


def send(
    bootstrap: Bootstrap,
    records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> list[str]:
    """Send (topic, key, value, headers) records, each acknowledged by the broker before
    the next; returns where each went as topic/partition@offset."""
    try:
        producer = kafka_clients.producer(bootstrap, acks="all", linger_ms=0)
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from None
    where: list[str] = []
    try:
        for topic, key, value, headers in records:
            meta = producer.send(topic, key=key, value=value, headers=headers).get(30)
            where.append(f"{meta.topic}/{meta.partition}@{meta.offset}")
        producer.flush()
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"the broker at {bootstrap} did not take record {len(where) + 1} of "
            f"{len(records)}: {exc}",
            sent=where,
        ) from None
    finally:
        producer.close()
    return where
