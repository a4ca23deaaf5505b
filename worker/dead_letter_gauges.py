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
dead letter stays in the DLQ (a replay copies it back to its topic) until retention
deletes it, but it no longer needs a person: the audit topic (`dlq replay` writes each
replay there, with the record's fingerprint) is followed too, and a replayed dead letter
is not counted. A dead letter replayed and dead-lettered again comes back as a new record,
with the same fingerprint: it counts again from its new time once it is newer than the
replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque

from worker import logs, metrics
from worker.contracts.headers import DLQ_ORIGINAL_TOPIC, DLQ_REASON
from worker.engine.backend import Backend
from worker.engine.follower import TopicFollower
from worker.engine.records import Record, TopicPartition
from worker.ops.audit import REPLAY, fingerprint

log = logs.get("worker.dead_letter_gauges")

INTERVAL_S = 30.0
TRAIL_RETRY_S = 300.0  # asking for a topic that is not there takes the cluster ~10 s
UNKNOWN = "unknown"  # a record without a dlq.reason header (not written by this worker)


class DeadLetterGauges:
    def __init__(
        self,
        backend: Backend,
        topic: str,
        audit_topic: str | None = None,
        interval_s: float = INTERVAL_S,
        trail_retry_s: float = TRAIL_RETRY_S,
    ) -> None:
        self.topic = topic
        self.audit_topic = audit_topic
        self.interval_s = interval_s
        self._backend = backend
        self._reader = backend.reader()
        # (partition, reason) → (offset, broker time in ms, fingerprint), oldest first
        self._held: dict[tuple[int, str], deque[tuple[int, int, str]]] = {}
        self._replayed: dict[str, int] = {}  # fingerprint → when it was last replayed (ms)
        self._reasons: set[str] = set()
        self._follower = TopicFollower(self._reader, topic, self._add)
        # The audit topic is made by the first `dlq replay`: followed once it exists.
        self._trail: TopicFollower | None = None
        self._trail_retry_s = trail_retry_s
        self._trail_asked: float | None = None
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
        if self._trail is not None:
            await self._trail.stop()
        await self._follower.stop()

    def _add(self, record: Record) -> None:
        headers = dict(record.headers or [])
        raw = headers.get(DLQ_REASON)
        reason = raw.decode("utf-8", "replace")[:64] if raw else UNKNOWN
        original = headers.get(DLQ_ORIGINAL_TOPIC, b"").decode("utf-8", "replace")
        fp = fingerprint(original, record.key, record.value)
        self._held.setdefault((record.partition, reason), deque()).append(
            (record.offset, record.timestamp_ms, fp)
        )

    def _replay(self, record: Record) -> None:
        """An audit record: the fingerprints a `dlq replay` sent back to their topics."""
        try:
            body = json.loads(record.value or b"")
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(body, dict) or body.get("action") != REPLAY:
            return
        for item in body.get("items") or []:
            if isinstance(item, dict) and item.get("outcome") == "sent":
                fp = item.get("fingerprint")
                if isinstance(fp, str):
                    self._replayed[fp] = max(self._replayed.get(fp, 0), record.timestamp_ms)

    async def _follow_trail(self) -> None:
        if self._trail is not None or self.audit_topic is None:
            return
        asked = self._trail_asked
        if asked is not None and time.monotonic() - asked < self._trail_retry_s:
            return
        self._trail_asked = time.monotonic()
        if not await self._reader.partitions(self.audit_topic):
            return  # not made yet: asked again at the next refresh
        trail = TopicFollower(self._backend.reader(), self.audit_topic, self._replay)
        await trail.start()
        self._trail = trail

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
        await self._follow_trail()
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
        replayed = self._replayed
        for (_, reason), held in self._held.items():
            for _, at, fp in held:
                if replayed.get(fp, -1) >= at:
                    continue  # replayed after it was dead-lettered: it needs nobody
                depth[reason] = depth.get(reason, 0) + 1
                oldest[reason] = min(oldest.get(reason, at), at)
        # A reason whose last dead letter is gone reads 0, not its last value.
        self._reasons |= set(depth)
        for reason in self._reasons:
            metrics.DLQ_RECORDS.labels(reason).set(depth.get(reason, 0))
            age = (now_ms - oldest[reason]) / 1000 if reason in oldest else 0.0
            metrics.DLQ_OLDEST_AGE_SECONDS.labels(reason).set(max(0.0, age))
