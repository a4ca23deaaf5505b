"""Whole topics followed outside any group (`worker/engine/follower.py`), on the memory
backend: every partition read from its first offset in order, `caught_up` once the follower
has read up to where the topic ended when it started, and following on after that."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from tests.waiting import until
from worker.engine.follower import TopicFollower
from worker.engine.memory import MemoryBroker, MemoryReader
from worker.engine.records import Record, TopicPartition

TOPIC = "registers"


class OneAtATime(MemoryReader):
    """A reader whose polls bring one record of each partition, so that reading the topic
    takes many polls."""

    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]:
        self.broker.check()
        return await self.broker.fetch(self.positions, self.assigned, timeout_s, limit=1)


class Seen:
    def __init__(self) -> None:
        self.offsets: dict[int, list[int]] = defaultdict(list)
        self.at_caught_up: dict[int, int] | None = None
        self.caught_up_calls = 0

    def handle(self, record: Record) -> None:
        self.offsets[record.partition].append(record.offset)

    def caught_up(self) -> None:
        self.caught_up_calls += 1
        self.at_caught_up = {p: len(offsets) for p, offsets in self.offsets.items()}


def broker_with(partitions: int, records: int) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(TOPIC, partitions)
    for p in range(partitions):
        for i in range(records):
            broker.append(TOPIC, f"t-{p}".encode(), str(i).encode(), partition=p)
    return broker


def follower(broker: MemoryBroker, seen: Seen) -> TopicFollower:
    return TopicFollower(OneAtATime(broker), TOPIC, seen.handle, seen.caught_up)


async def test_every_partition_is_read_in_order_from_its_first_offset_then_followed() -> None:
    broker = broker_with(3, 10)
    broker.delete_before(TOPIC, 2, 3)  # retention: partition 2 starts at offset 3
    seen = Seen()
    f = TopicFollower(MemoryReader(broker), TOPIC, seen.handle)  # whole batches a poll
    await f.start()
    try:
        await asyncio.wait_for(f.caught_up.wait(), 5)
        assert dict(seen.offsets) == {0: list(range(10)), 1: list(range(10)), 2: list(range(3, 10))}
        broker.append(TOPIC, b"t-1", b"new", partition=1)
        await until(lambda: seen.offsets[1][-1] == 10, 5.0)  # followed, not read once
    finally:
        await f.stop()
    broker.append(TOPIC, b"t-1", b"after-stop", partition=1)
    await asyncio.sleep(0.3)
    assert seen.offsets[1][-1] == 10  # stopped: nothing more is handled


async def test_caught_up_once_read_to_where_the_topic_ended_at_start_not_to_its_end_now() -> None:
    broker = broker_with(3, 10)
    broker.delete_before(TOPIC, 2, 3)
    seen = Seen()
    f = follower(broker, seen)
    await f.start()
    try:
        for i in range(50):  # written after the start: the follower reads them, later
            broker.append(TOPIC, b"t-0", str(i).encode(), partition=0)
        await asyncio.wait_for(f.caught_up.wait(), 5)
        assert seen.at_caught_up == {0: 10, 1: 10, 2: 7}
        await until(lambda: len(seen.offsets[0]) == 60, 5.0)
        assert seen.caught_up_calls == 1  # once, however long it follows
    finally:
        await f.stop()


async def test_an_empty_topic_is_caught_up_at_once_and_followed() -> None:
    broker = broker_with(2, 0)
    seen = Seen()
    f = follower(broker, seen)
    await f.start()
    try:
        await asyncio.wait_for(f.caught_up.wait(), 1)
        assert seen.caught_up_calls == 1 and not seen.offsets
        broker.append(TOPIC, b"t-0", b"first", partition=0)
        await until(lambda: seen.offsets[0] == [0], 5.0)
    finally:
        await f.stop()


async def test_a_topic_without_partitions_is_refused() -> None:
    f = TopicFollower(MemoryReader(MemoryBroker()), "no-such-topic", lambda r: None)
    with pytest.raises(RuntimeError, match="has no partitions"):
        await f.start()


async def test_it_follows_on_after_the_broker_was_away() -> None:
    broker = broker_with(1, 2)
    seen = Seen()
    f = follower(broker, seen)
    await f.start()
    try:
        await asyncio.wait_for(f.caught_up.wait(), 5)
        broker.down = True
        await asyncio.sleep(0.7)  # a poll fails meanwhile (it polls every 0.5 s at most)
        broker.down = False
        broker.append(TOPIC, b"t-0", b"back", partition=0)
        await until(lambda: seen.offsets[0] == [0, 1, 2], 5.0)
    finally:
        await f.stop()
