"""Reading a run's outcomes back from the broker: which payments were posted, rejected or
dead-lettered, Betalt→receipt latency, and why outcomes are missing (for the demo and
the integration tests)."""

from __future__ import annotations

import json

from worker.config import Settings
from worker.contracts import DlqReason
from worker.contracts.headers import DLQ_REASON
from worker.engine.kafka import KafkaReader
from worker.engine.records import Record, TopicPartition
from worker.kafka_clients.connection import Bootstrap

Key = tuple[str, str]  # (tenant_id, payment_id)


def payment_key(value: bytes | None) -> Key | None:
    """(tenant_id, payment_id) of a JSON record that names both, else None."""
    try:
        body = json.loads(value or b"")
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    tenant, payment = body.get("tenant_id"), body.get("payment_id")
    return (tenant, payment) if isinstance(tenant, str) and isinstance(payment, str) else None


class OutcomeWatcher:
    """Reads the events, receipts, rejections and dead letters from their start.

    Counts outcomes per payment, and pairs each payment's Betalt event with its receipt.
    A subclass that wants more of a record overrides its `note_*` method (and calls it).
    """

    def __init__(self, bootstrap: Bootstrap, s: Settings) -> None:
        self.s = s
        self.bootstrap = bootstrap
        # Outside the group, from the first offset (an empty topic: from where it starts).
        self.reader = KafkaReader(bootstrap)
        self.posted: set[tuple[str, str]] = set()
        self.rejected: set[tuple[str, str]] = set()
        self.dead_lettered = 0  # records, except Xledger refusals (counted as rejected)
        self.dead_letters: list[tuple[bytes | None, str]] = []  # (key, dlq.reason), each
        self.betalt_ms: dict[tuple[str, str], int] = {}  # payment → its event's broker time
        self.receipt_ms: dict[tuple[str, str], int] = {}  # payment → its first receipt's time
        # payment → where its Betalt event and its submissions sit ("topic:partition@offset")
        self.positions: dict[tuple[str, str], list[str]] = {}

    async def start(self) -> None:
        await self.reader.start()
        t = self.s.topics
        tps = [
            TopicPartition(topic, p)
            for topic in (t.payments, t.submissions, t.receipts, t.rejections, t.dlq)
            for p in range(self.s.partitions)
        ]
        self.reader.assign(tps)
        for tp, first in (await self.reader.beginning_offsets(tps)).items():
            self.reader.seek(tp, first)

    async def poll(self) -> None:
        batches = await self.reader.poll(0.2)
        for tp, records in batches.items():
            for r in records:
                self.note(tp.topic, f"{tp.topic}:{tp.partition}@{r.offset}", r)

    def note(self, topic: str, where: str, r: Record) -> None:
        """One record read back, at `where` (topic:partition@offset)."""
        t = self.s.topics
        if topic == t.payments:
            self.note_event(r, where)
        elif topic == t.submissions:
            self.note_submission(r, where)
        elif topic == t.receipts:
            self.note_receipt(r)
        elif topic == t.rejections:
            self.note_rejection(r)
        else:
            self.note_dead_letter(r)

    def note_event(self, r: Record, where: str) -> None:
        try:
            body = json.loads(r.value or b"")
            if body.get("status") == "Betalt":
                key = (body["tenant_id"], body["payment_id"])
                self.betalt_ms.setdefault(key, r.timestamp_ms)
                self.positions.setdefault(key, []).append(where)
        except (ValueError, AttributeError, KeyError, TypeError, RecursionError):
            pass  # unreadable events have no latency to measure

    def note_submission(self, r: Record, where: str) -> None:
        key = payment_key(r.value)
        if key:
            self.positions.setdefault(key, []).append(where)

    def note_receipt(self, r: Record) -> None:
        key = payment_key(r.value)
        if key:
            self.receipt_ms.setdefault(key, r.timestamp_ms)
            self.posted.add(key)

    def note_rejection(self, r: Record) -> None:
        key = payment_key(r.value)
        if key:
            self.rejected.add(key)

    def note_dead_letter(self, r: Record) -> None:
        reason = dict(r.headers or []).get(DLQ_REASON, b"").decode(errors="replace")
        self.dead_letters.append((r.key, reason))
        if reason != DlqReason.REFUSED:
            self.dead_lettered += 1

    async def explain(self, expected: set[tuple[str, str]]) -> str:
        """Why outcomes are missing: which payments, where their event and submissions
        sit, and where the worker's group stands on every partition it reads."""
        from worker.engine.lag import group_positions
        from worker.pipeline.topics import HANDLED, PENDING, POSTING, changelog_topic, refused_topic

        missing = sorted(expected - self.posted - self.rejected)
        lines = [f"{len(missing)} payment(s) without an outcome:"]
        for key in missing[:25]:
            lines.append(f"  {key[0]} {key[1]}: {', '.join(self.positions.get(key, ['?']))}")
        t = self.s.topics
        topics = [
            t.payments,
            t.submissions,
            refused_topic(self.s),
            *(changelog_topic(self.s, store) for store in (HANDLED, PENDING, POSTING)),
        ]
        lines.append(f"group {self.s.app_id}:")
        try:
            for pos in await group_positions(self.bootstrap, self.s.app_id, topics):
                lines.append(f"  {pos} lag={pos.lag}")
        except Exception as exc:  # a diagnosis must not hide the failure it explains
            lines.append(f"  (positions unavailable: {exc!r})")
        return "\n".join(lines)

    def latency_quantiles(self) -> dict[str, float | None]:
        """Betalt event → receipt, by the broker timestamps of the two records."""
        xs = sorted(
            (ms - self.betalt_ms[k]) / 1000
            for k, ms in self.receipt_ms.items()
            if k in self.betalt_ms
        )
        if not xs:
            return {"betalt_to_receipt_p50_s": None, "betalt_to_receipt_p99_s": None}

        def q(p: float) -> float:
            return round(xs[min(len(xs) - 1, int(p * len(xs)))], 3)

        return {"betalt_to_receipt_p50_s": q(0.50), "betalt_to_receipt_p99_s": q(0.99)}

    async def stop(self) -> None:
        await self.reader.stop()
