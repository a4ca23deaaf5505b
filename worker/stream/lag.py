"""Where a consumer group stands on each partition: committed offset, end offset, lag.

Read from outside the group (the admin API and a group-less consumer): looking never
joins the group, so it never moves a partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


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


async def group_positions(bootstrap: str, group: str, topics: list[str]) -> list[PartitionPosition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
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
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
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
