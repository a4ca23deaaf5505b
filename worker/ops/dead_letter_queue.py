"""Inspect and replay the dead-letter queue (`xledger.dlq.v1`).

A replay sends the record's original key, value and headers back to its original topic,
with `dlq.replay_count` and `dlq.replayed_by` added. Replaying is a manual transfer: the
actor must hold the Økonomi role (R13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROLE_OKONOMI = "Økonomi"


class ReplayRefused(Exception):
    """The replay is not allowed or not possible; the message says why."""


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "stage": self.header("dlq.stage"),
            "reason": self.header("dlq.reason"),
            "error_class": self.header("dlq.error_class"),
            "error_message": self.header("dlq.error_message"),
            "original": f"{self.header('dlq.original_topic')}/"
            f"{self.header('dlq.original_partition')}@"
            f"{self.header('dlq.original_offset')}",
            "attempts": self.header("dlq.attempts"),
            "last_failed_at": self.header("dlq.last_failed_at"),
            "replay_count": int(self.header("dlq.replay_count") or 0),
        }


def read_all(bootstrap: str, topic: str, timeout_s: float = 5.0) -> list[DeadLetter]:
    """Every record now in the DLQ, oldest first per partition."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[DeadLetter] = []
        remaining = {tp for tp in tps if consumer.end_offsets([tp])[tp] > 0}
        while remaining:
            batch = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=5000)
            if not batch:
                break
            for records in batch.values():
                out.extend(
                    DeadLetter(r.partition, r.offset, r.key, r.value, list(r.headers or []))
                    for r in records
                )
            end = consumer.end_offsets(list(remaining))
            remaining = {tp for tp in remaining if consumer.position(tp) < end[tp]}
        return sorted(out, key=lambda d: (d.partition, d.offset))
    finally:
        consumer.close()


def replay(bootstrap: str, letter: DeadLetter, actor: str, roles: list[str]) -> str:
    """Send a dead letter back to its original topic; returns where it went."""
    if not actor:
        raise ReplayRefused("a replay must name the actor who transfers it (R13)")
    if ROLE_OKONOMI not in roles:
        raise ReplayRefused(
            f"{actor} lacks the role {ROLE_OKONOMI}, which a manual transfer to Xledger needs (R13)"
        )
    topic = letter.header("dlq.original_topic")
    if not topic:
        raise ReplayRefused(f"record {letter.partition}@{letter.offset} names no original topic")
    count = int(letter.header("dlq.replay_count") or 0) + 1
    headers = [
        (k, v) for k, v in letter.headers if k not in ("dlq.replay_count", "dlq.replayed_by")
    ]
    headers += [("dlq.replay_count", str(count).encode()), ("dlq.replayed_by", actor.encode())]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=letter.key, value=letter.value, headers=headers).get(30)
        producer.flush()
    finally:
        producer.close()
    return topic
