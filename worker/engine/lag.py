"""Where a consumer group stands on each partition: committed offset, end offset, lag.

Read from outside the group (the admin API and a consumer that never subscribes):
looking never joins the group, so it never moves a partition. `LagMonitor` keeps such a
consumer open for the lag gauges, and measures the age of the oldest waiting record too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from worker.engine.kafka import topic_partitions
from worker.kafka_clients.client_args import client_args
from worker.kafka_clients.connection import Bootstrap


@dataclass(frozen=True)
class PartitionPosition:
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing here
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition} committed={self.committed} end={self.end}"


async def group_positions(
    bootstrap: Bootstrap, group: str, topics: list[str]
) -> list[PartitionPosition]:
    admin = AIOKafkaAdminClient(**client_args(bootstrap))
    await admin.start()
    try:
        tps = [
            TopicPartition(t["topic"], p["partition"])
            for t in await admin.describe_topics(topics)
            if t["error_code"] == 0
            for p in t["partitions"]
        ]
    finally:
        await admin.close()
    # The group's id on an assigned consumer: it reads the group's commits without joining
    # the group (no subscription), and commits nothing. (Tansu refuses the admin client's
    # OffsetFetch, and takes this one.)
    consumer = AIOKafkaConsumer(**client_args(bootstrap), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        return [
            PartitionPosition(tp.topic, tp.partition, await consumer.committed(tp), ends[tp])
            for tp in sorted(tps)
        ]
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    records: int  # not yet committed by the group
    seconds: float  # age of the oldest of them (0 when none waits)


# What the monitor asks of a partition per fetch (`_age` needs one record).
AGE_FETCH_BYTES = 64 * 1024


class LagMonitor:
    """The group's lag on its input topics, for the lag gauges (`worker/pipeline/observer.py`).

    One long-lived consumer, outside the group as in `group_positions`, with every
    partition assigned and paused: it fetches nothing except, for a partition that lags,
    the one record at the group's committed offset, whose timestamp tells how long the
    oldest unprocessed record has waited.
    """

    def __init__(
        self,
        bootstrap: Bootstrap,
        group: str,
        topics: list[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = topics
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned: set[TopicPartition] = set()
        self._seconds: dict[TopicPartition, float] = {}  # last age measured per partition

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **client_args(self.bootstrap),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # It reads one record a partition: the broker still sends a whole first batch.
            max_partition_fetch_bytes=AGE_FETCH_BYTES,
            fetch_max_bytes=AGE_FETCH_BYTES,
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def measure(self) -> list[PartitionLag]:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("LagMonitor.measure before start")
        tps = await self._partitions(consumer)
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        result = []
        for tp in tps:
            committed = await consumer.committed(tp)
            first = max(committed if committed is not None else 0, starts[tp])
            records = max(0, ends[tp] - first)
            if not records:
                self._seconds[tp] = 0.0
            else:  # a record that cannot be read just now keeps its last age
                age = await self._age(consumer, tp, first)
                self._seconds[tp] = age if age is not None else self._seconds.get(tp, 0.0)
            result.append(PartitionLag(tp.topic, tp.partition, records, self._seconds[tp]))
        return result

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        tps: list[TopicPartition] = []
        for topic in self.topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:  # not in the metadata yet: ask the cluster
                partitions = set(await topic_partitions(self.bootstrap, topic, tries=1))
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        if set(tps) != self._assigned:
            consumer.assign(tps)
            consumer.pause(*tps)
            self._assigned = set(tps)
        return tps

    async def _age(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
    ) -> float | None:
        """Seconds since the record at `offset` was written (None: not readable just now)."""
        consumer.seek(tp, offset)
        consumer.resume(tp)
        records: list[Any] = []
        try:
            # A partition whose leader just moved (a new topic, a broker lost) may take
            # more than one fetch to answer.
            for _ in range(3):
                batches = await consumer.getmany(tp, timeout_ms=1500, max_records=1)
                records = batches.get(tp) or []
                if records:
                    break
        finally:
            consumer.pause(tp)
            # Seeking drops what the fetch brought beyond that record: kept until the next
            # measure, a month start's lagging partitions held a fetch each (1 MiB on
            # Kafka; ~5 MB on Tansu, which sent more than it was asked).
            consumer.seek(tp, offset)
        if not records:
            return None
        return max(0.0, self._clock() - records[0].timestamp / 1000)
