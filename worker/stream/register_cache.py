"""Every worker's copy of all register snapshots (`flyt.registers.v1`, compacted).

Reads every partition from the start with an assigned consumer (no group: every worker
must see every tenant; a faust GlobalTable did not reach a second worker on Tansu),
then follows the topic. `ready` is set once the cache has read up to each partition's
end as it was at start; payments are not consumed before that. Memory holds one index
per tenant: proportional to the registers, not to history.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from worker import logs, metrics
from worker.contracts import RegisterSnapshot
from worker.contracts.reading import describe
from worker.core.register_book import RegisterBook

log = logs.get("worker.registers")

Listener = Callable[[RegisterSnapshot], Awaitable[None]]


class RegisterCache:
    def __init__(self, bootstrap: str, topic: str, book: RegisterBook) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.book = book
        self.ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        partitions = consumer.partitions_for_topic(self.topic)
        for _ in range(100):  # metadata may lag a just-created topic (Apache Kafka)
            if partitions:
                break
            await asyncio.sleep(0.1)
            # aiokafka's consumer has no public metadata refresh; its client has.
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._run(consumer, end), name="register-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout_s)

    async def _run(self, consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> None:
        pending = {tp for tp, offset in end.items() if offset > 0}
        if not pending:
            self._mark_ready()
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                for record in records:
                    await self._apply(record.value, record.partition, record.offset)
            if pending:
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
                if not pending:
                    self._mark_ready()

    def _mark_ready(self) -> None:
        if not self.ready.is_set():
            log.info("register_cache_ready", tenants=len(self.book), topic=self.topic)
            self.ready.set()

    async def _apply(self, value: bytes | None, partition: int, offset: int) -> None:
        if value is None:  # a tombstone: the tenant's snapshot in force stays (decided)
            log.warning("snapshot_tombstone_ignored", partition=partition, offset=offset)
            return
        try:
            snapshot = RegisterSnapshot.model_validate_json(value)
        except ValidationError as exc:
            metrics.SNAPSHOTS.labels("unknown", "refused").inc()
            log.error(
                "snapshot_unreadable", partition=partition, offset=offset, error=describe(exc)
            )
            return
        offer = self.book.offer(snapshot)
        if not offer.accepted:
            metrics.SNAPSHOTS.labels(snapshot.tenant_id, "refused").inc()
            log.error(
                "snapshot_refused",
                tenant_id=snapshot.tenant_id,
                version=snapshot.version,
                reasons=[f"{r.rule} {r.code}: {r.message}" for r in offer.refusals],
            )
            return
        metrics.SNAPSHOTS.labels(snapshot.tenant_id, "accepted").inc()
        metrics.SNAPSHOT_VERSION.labels(snapshot.tenant_id).set(snapshot.version)
        log.info("snapshot_accepted", tenant_id=snapshot.tenant_id, version=snapshot.version)
        for listener in self.listeners:
            try:
                await listener(snapshot)
            except Exception as exc:  # a listener's failure must not stop the cache
                log.exception(
                    "snapshot_listener_failed", tenant_id=snapshot.tenant_id, error=str(exc)
                )
