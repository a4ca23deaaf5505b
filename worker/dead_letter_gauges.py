"""How deep the dead-letter queue is and how old its oldest record, per reason: a dead
letter must be seen before retention deletes it (FLYT_RETENTION_DAYS, 30 days).

A light reader in each worker, not an exporter beside it: the workers are always running
and always scraped, so no other Deployment or scrape target is needed, and a dead letter
is counted seconds after it is written. It reads the DLQ once at start (headers and times
only are kept: a partition, an offset, a time and a reason per record, never a value),
then follows its end; the records retention has deleted are dropped by the partitions'
log start, asked every `interval_s`. Memory grows with the dead letters the DLQ holds,
not with the traffic: a few dozen bytes each.

Every replica reports the same figures: dashboards and alerts take the max. A replayed
dead letter stays in the DLQ (a replay copies it back to its topic) and is counted until
retention deletes it: the depth is what the DLQ holds, not what still needs a person.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from worker import logs, metrics
from worker.contracts.headers import DLQ_REASON
from worker.engine.backend import Reader
from worker.engine.follower import TopicFollower
from worker.engine.records import Record, TopicPartition

log = logs.get("worker.dead_letter_gauges")

INTERVAL_S = 30.0
UNKNOWN = "unknown"  # a record without a dlq.reason header (not written by this worker)


class DeadLetterGauges:
    def __init__(self, reader: Reader, topic: str, interval_s: float = INTERVAL_S) -> None:
        self.topic = topic
        self.interval_s = interval_s
        self._reader = reader
        # (partition, reason) → (offset, broker time in ms), oldest first
        self._held: dict[tuple[int, str], deque[tuple[int, int]]] = {}
        self._reasons: set[str] = set()
        self._follower = TopicFollower(reader, topic, self._add)
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> asyncio.Event:
        return self._follower.caught_up

    async def start(self) -> None:
        await self._follower.start()
        self._task = asyncio.create_task(self._run(), name="dead-letter-gauges")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._follower.stop()

    def _add(self, record: Record) -> None:
        raw = dict(record.headers or []).get(DLQ_REASON)
        reason = raw.decode("utf-8", "replace")[:64] if raw else UNKNOWN
        self._held.setdefault((record.partition, reason), deque()).append(
            (record.offset, record.timestamp_ms)
        )

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a broker hiccup must not end the measuring
                log.warning(
                    "dead_letter_gauges_not_refreshed", error=f"{type(exc).__name__}: {exc}"
                )
            await asyncio.sleep(self.interval_s)

    async def refresh(self, now_s: float | None = None) -> None:
        """Drop what retention deleted, then set the gauges (once caught up)."""
        partitions = {p for p, _ in self._held}
        if partitions:
            starts = await self._reader.beginning_offsets(
                [TopicPartition(self.topic, p) for p in partitions]
            )
            for (p, _), held in self._held.items():
                start = starts.get(TopicPartition(self.topic, p), 0)
                while held and held[0][0] < start:
                    held.popleft()
        if self.ready.is_set():
            self.publish(now_s)

    def publish(self, now_s: float | None = None) -> None:
        now_ms = (now_s if now_s is not None else time.time()) * 1000
        depth: dict[str, int] = {}
        oldest: dict[str, int] = {}
        for (_, reason), held in self._held.items():
            if held:
                depth[reason] = depth.get(reason, 0) + len(held)
                oldest[reason] = min(oldest.get(reason, held[0][1]), held[0][1])
        # A reason whose last dead letter is gone reads 0, not its last value.
        self._reasons |= set(depth)
        for reason in self._reasons:
            metrics.DLQ_RECORDS.labels(reason).set(depth.get(reason, 0))
            age = (now_ms - oldest[reason]) / 1000 if reason in oldest else 0.0
            metrics.DLQ_OLDEST_AGE_SECONDS.labels(reason).set(max(0.0, age))
