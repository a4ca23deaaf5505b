"""The audit trail of manual transfers (R13): who replayed or resent what, when, and what
came of it. One JSON record per command run, on the audit topic (`flyt.xledger.audit.v1`,
keyed by actor) and in the log. Refusals are recorded too; a dry run records nothing.

The trail also counts replays: a dead letter that is replayed and fails again comes back
as a new DLQ record, so its replays are counted by its fingerprint (original topic, key
and value) across the trail, not only by its `dlq.replay_count` header.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker import logs
from worker.kafka_clients.connection import Bootstrap
from worker.kafka_clients.sync_clients import BrokerError as KafkaError
from worker.kafka_clients.sync_clients import NewTopic, TopicAlreadyExistsError
from worker.ops import kafka_clients
from worker.ops.errors import BrokerUnavailable
from worker.ops.topic_reader import Record, send

log = logs.get("worker.ops")

REPLAY = "dlq.replay"
RESEND = "rejections.resend"
PAUSE = "tenant.pause"
RESUME = "tenant.resume"


def fingerprint(topic: str, key: bytes | None, value: bytes | None) -> str:
    """Names a record by its content and destination, so that it is recognised when it
    comes back to the DLQ under a new offset."""
    h = hashlib.sha256()
    for part in (topic.encode(), key or b"", value or b""):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:24]


@dataclass
class AuditItem:
    source: str  # where the record was read: topic/partition@offset
    outcome: str  # sent | refused | skipped
    target: str | None = None  # the topic it was sent to
    tenant_id: str | None = None
    payment_id: str | None = None
    fingerprint: str | None = None
    replay_count: int | None = None  # replays before this one (dlq.replay only)
    reason: str | None = None  # why refused or skipped
    sent_to: str | None = None  # topic/partition@offset of the record sent


@dataclass
class AuditRecord:
    action: str
    actor: str
    roles: list[str]
    outcome: str  # done | partly_refused | refused | failed
    reason: str | None = None
    items: list[AuditItem] = field(default_factory=list)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    schema_version: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ensure_topic(bootstrap: Bootstrap, topic: str, config: dict[str, str] | None = None) -> None:
    """The audit topic (or another of the tools' own), made on first use: one partition (a
    trail reads in order), as many copies as the cluster allows up to three."""
    admin = kafka_clients.admin(bootstrap)
    try:
        if topic in admin.list_topics():
            return
        brokers = len(admin.describe_cluster()["brokers"])
        with contextlib.suppress(TopicAlreadyExistsError):  # another replay made it first
            admin.create_topics(
                [NewTopic(topic, 1, min(3, max(1, brokers)), topic_configs=config or {})]
            )
    except KafkaError as exc:
        raise BrokerUnavailable(f"could not make the topic {topic}: {exc}") from None
    finally:
        admin.close()


def write(bootstrap: Bootstrap, topic: str, record: AuditRecord) -> str:
    """To the log first (it cannot fail), then to the audit topic; returns its position."""
    body = record.to_json()
    log.info("operator_action", **{k: v for k, v in body.items() if k != "schema_version"})
    ensure_topic(bootstrap, topic)
    value = json.dumps(body, ensure_ascii=False).encode()
    [where] = send(bootstrap, [(topic, record.actor.encode(), value, [])])
    return where


def replays_by_fingerprint(trail: list[Record]) -> Counter[str]:
    """How often each record was replayed, by the audit trail."""
    counts: Counter[str] = Counter()
    for r in trail:
        body = r.json()
        if not body or body.get("action") != REPLAY:
            continue
        for item in body.get("items") or []:
            if isinstance(item, dict) and item.get("outcome") == "sent" and item.get("fingerprint"):
                counts[str(item["fingerprint"])] += 1
    return counts
