"""Per-partition pause and resume: a stage that falls behind on a partition (a tenant
paused for its token or credits holds its records undone) must not make the worker buffer
that partition without bound. Above `high` undone records the partition is paused (the
consumer fetches nothing more of it); below half of that it is resumed.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker import logs, metrics
from worker.engine.backend import GroupConsumer
from worker.engine.offsets import Lane
from worker.engine.records import TopicPartition

log = logs.get("worker.engine")


class Backpressure:
    def __init__(self, consumer: GroupConsumer, high: int) -> None:
        self.consumer = consumer
        self.high = high
        self.low = high // 2
        self.paused: set[TopicPartition] = set()

    def check(self, lanes: Iterable[Lane]) -> None:
        for lane in lanes:
            tp = lane.tp
            if tp not in self.paused and lane.undone > self.high and lane.open:
                self.consumer.pause([tp])
                self.paused.add(tp)
                metrics.PARTITION_PAUSED.labels(tp.topic, str(tp.partition)).set(1)
                log.warning(
                    "partition_paused", topic=tp.topic, partition=tp.partition, undone=lane.undone
                )
            elif tp in self.paused and lane.undone < self.low:
                self.consumer.resume([tp])
                self.paused.discard(tp)
                metrics.PARTITION_PAUSED.labels(tp.topic, str(tp.partition)).set(0)
                log.info("partition_resumed", topic=tp.topic, partition=tp.partition)

    def forget(self, lanes: Iterable[Lane]) -> None:
        """The lanes are handed over: their partitions' pause goes with them."""
        for lane in lanes:
            if lane.tp in self.paused:
                self.paused.discard(lane.tp)
                metrics.PARTITION_PAUSED.labels(lane.tp.topic, str(lane.tp.partition)).set(0)
