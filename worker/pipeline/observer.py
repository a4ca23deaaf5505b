"""What a running pipeline tells the probes and the state gauges.

Readiness (`pipeline_readiness`, for /ready, `worker/health.py`): the register cache has
caught up, the engine runs, it is not rebalancing, its first assignment (with state
restored) is prepared, and it holds at least one partition of its input topics.

The state gauges, refreshed every `interval_s` by `Observer`: consumer lag per topic and
partition in records and seconds (`lag.py`), rejections parked for re-evaluation per
tenant (R16), and the age of each tenant's register snapshot in force. Counters change
where things happen; these describe a state, so they are measured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime

from worker import logs, metrics
from worker.engine.lag import LagMonitor
from worker.health import HEALTH, Health, Readiness
from worker.kafka_clients.connection import connection
from worker.pipeline.payment_state import split_key
from worker.pipeline.topics import PENDING
from worker.pipeline.wiring import Pipeline

log = logs.get("worker.observer")

INTERVAL_S = 5.0


def pipeline_readiness(pipeline: Pipeline) -> Readiness:
    engine = pipeline.engine
    if not pipeline.cache.ready.is_set():
        return Readiness(False, "register cache catching up")
    failed = engine.failure is not None and engine.failure.done()
    if not engine.started or engine.stopping or failed:
        return Readiness(False, "stream processor not running")
    if engine.rebalancing:
        return Readiness(False, "rebalancing")
    if engine.assignments == 0:
        return Readiness(False, "first assignment or state restore not complete")
    inputs = {pipeline.s.topics.payments, pipeline.s.topics.submissions}
    held = [tp for tp in engine.lanes if tp.topic in inputs]
    if not held:
        return Readiness(False, "no partitions assigned")
    return Readiness(True, f"ready: {len(held)} input partitions assigned")


class Observer:
    """Watches one pipeline: readiness for the probes, and the state gauges."""

    def __init__(
        self,
        pipeline: Pipeline,
        bootstrap: str,
        health: Health = HEALTH,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.pipeline = pipeline
        self.health = health
        self.interval_s = interval_s
        t = pipeline.s.topics
        kafka = connection(bootstrap, pipeline.s.kafka)
        self.lag = LagMonitor(kafka, pipeline.s.app_id, [t.payments, t.submissions])
        self._task: asyncio.Task[None] | None = None
        self._parked: set[str] = set()

    async def start(self) -> None:
        self.health.watch(lambda: pipeline_readiness(self.pipeline))
        await self.lag.start()
        self._task = asyncio.create_task(self._run(), name="observer")

    async def stop(self) -> None:
        self.health.unwatch()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.lag.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a broker hiccup must not end the measuring
                log.warning("gauges_not_refreshed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> None:
        self.refresh_tenants()
        for p in await self.lag.measure():
            metrics.CONSUMER_LAG_RECORDS.labels(p.topic, str(p.partition)).set(p.records)
            metrics.CONSUMER_LAG_SECONDS.labels(p.topic, str(p.partition)).set(p.seconds)

    def refresh_tenants(self) -> None:
        """Parked rejections and snapshot age, for every tenant known here."""
        book = self.pipeline.book
        now = datetime.now(UTC)
        for tenant in book.tenants():
            index = book.index(tenant)
            if index is not None:
                age = (now - index.published_at).total_seconds()
                metrics.SNAPSHOT_AGE_SECONDS.labels(tenant).set(max(0.0, age))
        parked: Counter[str] = Counter()
        for store in self.pipeline.engine.held_stores(PENDING):
            parked.update(split_key(key)[0] for key, _ in store.items())
        # A tenant whose last parked rejection was cured drops to 0, not out of sight.
        for tenant in self._parked | set(book.tenants()) | set(parked):
            metrics.REJECTIONS_PARKED.labels(tenant).set(parked.get(tenant, 0))
        self._parked |= set(parked)
