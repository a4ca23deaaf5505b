"""Reading a run's outcomes back from the broker: which payments were posted, rejected or
dead-lettered, Betalt→receipt latency, and why outcomes are missing (for the demo and
the integration tests)."""

from __future__ import annotations

import json

from worker.config import Settings
from worker.engine.kafka import KafkaReader
from worker.engine.records import TopicPartition


class OutcomeWatcher:
    """Reads the events, receipts, rejections and dead letters from their start.

    Counts outcomes per payment, and pairs each payment's Betalt event with its receipt.
    """

    def __init__(self, bootstrap: str, s: Settings) -> None:
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
        t = self.s.topics
        batches = await self.reader.poll(0.2)
        for tp, records in batches.items():
            for r in records:
                if tp.topic == t.payments:
                    self._note_betalt(
                        r.value, r.timestamp_ms, f"{tp.topic}:{tp.partition}@{r.offset}"
                    )
                elif tp.topic == t.submissions:
                    body = json.loads(r.value or b"{}")
                    key = (body["tenant_id"], body["payment_id"])
                    self.positions.setdefault(key, []).append(
                        f"{tp.topic}:{tp.partition}@{r.offset}"
                    )
                elif tp.topic == t.receipts:
                    body = json.loads(r.value or b"{}")
                    key = (body["tenant_id"], body["payment_id"])
                    self.receipt_ms.setdefault(key, r.timestamp_ms)
                    self.posted.add(key)
                elif tp.topic == t.rejections:
                    body = json.loads(r.value or b"{}")
                    self.rejected.add((body["tenant_id"], body["payment_id"]))
                else:
                    headers = dict(r.headers or [])
                    reason = headers.get("dlq.reason", b"").decode(errors="replace")
                    self.dead_letters.append((r.key, reason))
                    if reason != "refused":
                        self.dead_lettered += 1

    def _note_betalt(self, value: bytes | None, timestamp_ms: int, position: str) -> None:
        try:
            body = json.loads(value or b"")
            if body.get("status") == "Betalt":
                key = (body["tenant_id"], body["payment_id"])
                self.betalt_ms.setdefault(key, timestamp_ms)
                self.positions.setdefault(key, []).append(position)
        except (ValueError, AttributeError, KeyError, TypeError, RecursionError):
            pass  # unreadable events have no latency to measure

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
