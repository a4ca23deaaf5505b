"""Reads a run's topics back from the broker: which payments have an outcome, Betalt →
receipt latency by the records' broker timestamps, and when the enrich stage wrote its
first and last output (its throughput, measured inside the worker's own clock domain
without scraping it)."""

from __future__ import annotations

import asyncio
import json
import time

from worker.config import Topics
from worker.engine.kafka import KafkaReader
from worker.engine.records import TopicPartition

Key = tuple[str, str]


class Watch:
    def __init__(self, bootstrap: str, topics: Topics, partitions: int) -> None:
        self.topics = topics
        self.partitions = partitions
        self.reader = KafkaReader(bootstrap)
        self.betalt_ms: dict[Key, int] = {}
        self.receipt_ms: dict[Key, int] = {}
        self.rejected: set[Key] = set()
        self.dead_letters = 0
        self.enrich_first_ms: int | None = None  # first submission or rejection written
        self.enrich_last_ms: int | None = None

    async def start(self) -> None:
        await self.reader.start()
        t = self.topics
        tps = [
            TopicPartition(topic, p)
            for topic in (t.payments, t.submissions, t.receipts, t.rejections, t.dlq)
            for p in range(self.partitions)
        ]
        self.reader.assign(tps)
        for tp, first in (await self.reader.beginning_offsets(tps)).items():
            self.reader.seek(tp, first)

    async def stop(self) -> None:
        await self.reader.stop()

    async def until_done(self, expected: set[Key], timeout_s: float) -> None:
        """Read until every expected payment is posted or rejected."""
        deadline = time.monotonic() + timeout_s
        while expected - self.receipt_ms.keys() - self.rejected:
            if time.monotonic() > deadline:
                missing = len(expected - self.receipt_ms.keys() - self.rejected)
                raise TimeoutError(
                    f"{missing} of {len(expected)} payments without an outcome after "
                    f"{timeout_s:.0f} s ({self.dead_letters} dead letters)"
                )
            await self.poll()

    async def poll(self) -> None:
        t = self.topics
        batches = await self.reader.poll(0.2)
        for tp, records in batches.items():
            for r in records:
                if tp.topic == t.payments:
                    body = json.loads(r.value or b"{}")
                    if body.get("status") == "Betalt":
                        self.betalt_ms.setdefault(
                            (body["tenant_id"], body["payment_id"]), r.timestamp_ms
                        )
                    continue
                if tp.topic in (t.submissions, t.rejections):
                    self._enrich_output(r.timestamp_ms)
                if tp.topic == t.dlq:
                    self.dead_letters += 1
                    continue
                if tp.topic == t.submissions:
                    continue
                body = json.loads(r.value or b"{}")
                key = (body["tenant_id"], body["payment_id"])
                if tp.topic == t.receipts:
                    self.receipt_ms.setdefault(key, r.timestamp_ms)
                else:
                    self.rejected.add(key)
        await asyncio.sleep(0)

    def _enrich_output(self, ms: int) -> None:
        if self.enrich_first_ms is None or ms < self.enrich_first_ms:
            self.enrich_first_ms = ms
        if self.enrich_last_ms is None or ms > self.enrich_last_ms:
            self.enrich_last_ms = ms

    def latencies_ms(self, keys: set[Key]) -> list[int]:
        """Betalt event → first receipt, for the given payments that were posted."""
        return sorted(
            self.receipt_ms[k] - self.betalt_ms[k]
            for k in keys
            if k in self.receipt_ms and k in self.betalt_ms
        )


def quantile(xs: list[int], q: float) -> int | None:
    """The q-quantile of sorted xs (nearest rank), None for no data."""
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(q * len(xs)))]
