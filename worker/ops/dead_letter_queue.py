"""Inspect and replay the dead-letter queue (`xledger.dlq.v1`).

A replay sends the record's original key, value and headers back to its original topic,
with `dlq.replay_count` and `dlq.replayed_by` added. Replaying is a manual transfer: the
actor must hold the Økonomi role (R13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import ValidationError

from worker.contracts import DlqHeaders

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

    def dlq(self) -> DlqHeaders | None:
        """The `dlq.*` headers, read through the contract's model; None when a record in
        the topic does not carry a valid set (it was not written by this worker)."""
        try:
            return DlqHeaders.from_kafka(self.headers)
        except (ValidationError, UnicodeDecodeError):
            return None

    def summary(self) -> dict[str, Any]:
        h = self.dlq()
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "stage": h.stage if h else None,
            "reason": str(h.reason) if h else None,
            "error_class": h.error_class if h else None,
            "error_message": h.error_message if h else "no valid dlq.* headers",
            "original": f"{h.original_topic}/{h.original_partition}@{h.original_offset}"
            if h
            else None,
            "attempts": h.attempts if h else None,
            "last_failed_at": h.last_failed_at.isoformat() if h else None,
            "replay_count": (h.replay_count or 0) if h else 0,
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
    h = letter.dlq()
    if h is None:
        raise ReplayRefused(
            f"record {letter.partition}@{letter.offset} has no valid dlq.* headers: "
            "its original topic is unknown"
        )
    # Every other header stays byte for byte; only the replay's own two are replaced.
    count = (h.replay_count or 0) + 1
    headers = [
        (k, v) for k, v in letter.headers if k not in ("dlq.replay_count", "dlq.replayed_by")
    ]
    headers += [("dlq.replay_count", str(count).encode()), ("dlq.replayed_by", actor.encode())]
    topic = h.original_topic
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=letter.key, value=letter.value, headers=headers).get(30)
        producer.flush()
    finally:
        producer.close()
    return topic
