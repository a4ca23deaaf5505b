"""Every worker's copy of all register snapshots (`flyt.registers.v1`, compacted).

Reads every partition from the start, outside the consumer group (every worker must see
every tenant), then follows the topic (`engine/follower.py`). `ready` is set once the
cache has read up to each partition's end as it was at start; the stages take no record
before that. Memory holds one index per tenant: proportional to the registers, not to
history. An accepted snapshot is announced to `on_accepted` listeners, which must not
block: R16's re-evaluation runs in the enrich stage's own tasks, never in here.
"""

from __future__ import annotations

from collections.abc import Callable

from worker import logs, metrics
from worker.contracts import RegisterSnapshot
from worker.core.register_book import RegisterBook
from worker.core.snapshot_record import Applied, apply_snapshot_record
from worker.engine.backend import Reader
from worker.engine.follower import FollowedTopic
from worker.engine.records import Record

log = logs.get("worker.registers")

Listener = Callable[[RegisterSnapshot], None]


class RegisterCache(FollowedTopic):
    def __init__(self, reader: Reader, topic: str, book: RegisterBook) -> None:
        super().__init__(reader, topic)
        self.book = book
        self.listeners: list[Listener] = []

    def _caught_up(self) -> None:
        log.info("register_cache_ready", tenants=len(self.book), topic=self.topic)

    def _apply(self, record: Record) -> None:
        applied = apply_snapshot_record(self.book, record.value)
        snapshot = applied.snapshot
        if applied.kind is Applied.TOMBSTONE:  # the tenant's snapshot in force stays
            log.warning(
                "snapshot_tombstone_ignored", partition=record.partition, offset=record.offset
            )
            return
        if applied.kind is Applied.UNREADABLE or snapshot is None:
            metrics.SNAPSHOTS.labels("unknown", "refused").inc()
            log.error(
                "snapshot_unreadable",
                partition=record.partition,
                offset=record.offset,
                error="; ".join(applied.reasons),
            )
            return
        if applied.kind is Applied.REFUSED:
            metrics.SNAPSHOTS.labels(snapshot.tenant_id, "refused").inc()
            log.error(
                "snapshot_refused",
                tenant_id=snapshot.tenant_id,
                version=snapshot.version,
                reasons=list(applied.reasons),
            )
            return
        metrics.SNAPSHOTS.labels(snapshot.tenant_id, "accepted").inc()
        metrics.SNAPSHOT_VERSION.labels(snapshot.tenant_id).set(snapshot.version)
        log.info("snapshot_accepted", tenant_id=snapshot.tenant_id, version=snapshot.version)
        for listener in self.listeners:
            try:
                listener(snapshot)
            except Exception as exc:  # a listener's failure must not stop the cache
                log.exception(
                    "snapshot_listener_failed", tenant_id=snapshot.tenant_id, error=str(exc)
                )
