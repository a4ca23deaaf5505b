"""An in-process broker behind the engine's backend interfaces, for fast tests of the
engine and the stages (as arroyo's local backend does), beside the real-broker tests and
never instead of them.

It keeps what the engine relies on: partitioned logs with offsets, a consumer group whose
members are revoked before anyone is assigned (eager rebalancing, as aiokafka does),
commits refused to a member whose generation has moved on (a zombie), a log start that
retention can move, and records too large to take.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from worker.engine import assignment
from worker.engine.backend import Fenced, GroupSettings, PositionLost, RebalanceListener
from worker.engine.records import Output, Record, TopicPartition


class RecordTooLarge(Exception):
    """The memory broker's refusal of a record over its size limit."""


class BrokerDown(ConnectionError):
    """The memory broker is 'unreachable' (`MemoryBroker.down`)."""


@dataclass
class _Log:
    records: list[Record] = field(default_factory=list)
    start: int = 0  # the first offset still held (retention moves it)

    @property
    def end(self) -> int:
        return len(self.records)


class MemoryBroker:
    def __init__(self, max_record_bytes: int = 1024 * 1024) -> None:
        self.logs: dict[str, list[_Log]] = {}
        self.groups: dict[str, _Group] = {}
        self.max_record_bytes = max_record_bytes
        self.down = False  # every request fails while True
        self.refusing: set[str] = set()  # topics whose writes fail (a broker that is away)
        self.history: list[tuple[str, int, int]] = []  # every append, in order
        self.appended = asyncio.Event()

    def create_topic(self, topic: str, partitions: int) -> None:
        self.logs.setdefault(topic, [_Log() for _ in range(partitions)])

    def partitions(self, topic: str) -> int:
        return len(self.logs.get(topic, []))

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> int:
        self.check()
        if topic in self.refusing:
            raise BrokerDown(f"writes to {topic} fail")
        size = len(key or b"") + len(value or b"")
        if size > self.max_record_bytes:
            raise RecordTooLarge(f"{size} bytes > {self.max_record_bytes}")
        logs = self.logs[topic]
        if partition is None:
            partition = zlib.crc32(key or b"") % len(logs)
        log = logs[partition]
        offset = log.end
        log.records.append(Record(topic, partition, offset, key, value, tuple(headers)))
        self.history.append((topic, partition, offset))
        self.appended.set()
        self.appended = asyncio.Event()
        return offset

    def read(self, topic: str, partition: int) -> list[Record]:
        """Every record still held (tests read outputs with it)."""
        log = self.logs[topic][partition]
        return log.records[log.start :]

    def read_all(self, topic: str) -> list[Record]:
        return [r for p in range(self.partitions(topic)) for r in self.read(topic, p)]

    def delete_before(self, topic: str, partition: int, offset: int) -> None:
        """Retention: records before `offset` are gone."""
        log = self.logs[topic][partition]
        log.start = max(log.start, min(offset, log.end))

    def group(self, name: str) -> _Group:
        return self.groups.setdefault(name, _Group(self, name))

    def check(self) -> None:
        if self.down:
            raise BrokerDown("memory broker down")

    async def wait_for_data(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.appended.wait(), timeout_s)

    async def fetch(
        self,
        positions: dict[TopicPartition, int],
        tps: Iterable[TopicPartition],
        timeout_s: float,
        limit: int | None = None,
    ) -> dict[TopicPartition, list[Record]]:
        """The records of `tps` from their positions on (from the log start where a
        position is missing or before it), at most `limit` each, the positions moved past
        them; with nothing to return, waits up to `timeout_s` for data first."""
        out: dict[TopicPartition, list[Record]] = {}
        for tp in tps:
            log = self.logs[tp.topic][tp.partition]
            position = max(positions.get(tp, log.start), log.start)
            batch = log.records[position : None if limit is None else position + limit]
            if batch:
                out[tp] = batch
                positions[tp] = position + len(batch)
        if not out:
            await self.wait_for_data(timeout_s)
        return out


class _Group:
    def __init__(self, broker: MemoryBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.members: dict[str, MemoryGroupConsumer] = {}
        self.generation = 0
        self.committed: dict[TopicPartition, int] = {}
        self.copartitioned: tuple[tuple[str, ...], ...] = ()
        self._lock = asyncio.Lock()

    async def rebalance(self) -> None:
        """Eager: every member's partitions are revoked, then all are assigned anew."""
        async with self._lock:
            self.generation += 1
            members = dict(self.members)
            for member in members.values():
                await member.revoke()
            subscriptions = {m: c.topics for m, c in members.items()}
            counts = {
                t: self.broker.partitions(t) for topics in subscriptions.values() for t in topics
            }
            dealt = assignment.assign(subscriptions, counts, self.copartitioned)
            for member_id, member in members.items():
                await member.assign(dealt[member_id], self.generation)

    def commit(self, member: MemoryGroupConsumer, offsets: dict[TopicPartition, int]) -> None:
        self.broker.check()
        if self.members.get(member.member_id) is not member or member.generation != self.generation:
            raise Fenced(f"member {member.member_id} of generation {member.generation} is gone")
        if any(tp not in member.assigned for tp in offsets):
            raise Fenced("a partition not assigned to this member")
        self.committed.update(offsets)


_member_ids = itertools.count(1)


class MemoryGroupConsumer:
    def __init__(self, broker: MemoryBroker, settings: GroupSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.group = broker.group(settings.group)
        self.group.copartitioned = settings.copartitioned
        self.member_id = f"member-{next(_member_ids)}"
        self.topics: list[str] = []
        self.listener: RebalanceListener | None = None
        self.assigned: set[TopicPartition] = set()
        self.generation = -1
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.expelled = False  # a zombie: the group moved on without telling it
        self.stalled = False  # its polls find nothing (a stalled process fetches nothing)

    async def start(self) -> None:
        self.broker.check()

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        self.topics = list(topics)
        self.listener = listener
        self.group.members[self.member_id] = self
        asyncio.get_running_loop().create_task(self.group.rebalance())

    async def stop(self) -> None:
        if self.group.members.get(self.member_id) is self:
            del self.group.members[self.member_id]
            self.assigned = set()
            await self.group.rebalance()

    def expel(self) -> None:
        """The session expired (a stall): the group rebalances without this member. It is
        not told: its polls return nothing and its commits fail until `wake()`, after which
        its next poll finds out (revoking first) and rejoins."""
        self.expelled = True
        self.stalled = True
        del self.group.members[self.member_id]
        asyncio.get_running_loop().create_task(self.group.rebalance())

    def wake(self) -> None:
        """The stall is over: the member's next poll learns it was expelled."""
        self.stalled = False

    async def revoke(self) -> None:
        revoked, self.assigned = self.assigned, set()
        if self.listener is not None:
            await self.listener.on_revoked(revoked)

    async def assign(self, tps: set[TopicPartition], generation: int) -> None:
        self.assigned = set(tps)
        self.generation = generation
        for tp in tps:
            committed = self.group.committed.get(tp)
            first = self.broker.logs[tp.topic][tp.partition].start
            self.positions[tp] = first if committed is None else max(committed, first)
        if self.listener is not None:
            await self.listener.on_assigned(set(tps))

    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]:
        self.broker.check()
        if self.stalled:
            await asyncio.sleep(timeout_s)
            return {}
        if self.expelled:  # it finds out: revoke what it thought it had, then rejoin
            self.expelled = False
            await self.revoke()
            self.group.members[self.member_id] = self
            await self.group.rebalance()
        lost = {
            tp: self.positions[tp]
            for tp in sorted(self.assigned - self.paused)
            if tp in self.positions
            and not (
                self.broker.logs[tp.topic][tp.partition].start
                <= self.positions[tp]
                <= self.broker.logs[tp.topic][tp.partition].end
            )
        }
        if lost:  # as a Kafka consumer with auto_offset_reset=none: never a silent reset
            raise PositionLost(lost)
        return await self.broker.fetch(
            self.positions,
            sorted(self.assigned - self.paused),
            timeout_s,
            self.settings.max_poll_records,
        )

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.group.commit(self, offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        self.broker.check()
        return self.group.committed.get(tp)

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        self.broker.check()
        return {tp: self.broker.logs[tp.topic][tp.partition].start for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        self.paused |= set(tps)

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        self.paused -= set(tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.broker.logs[tp.topic][tp.partition].end


class MemoryReader:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        self.broker.check()

    async def stop(self) -> None:
        pass

    async def partitions(self, topic: str) -> list[int]:
        return list(range(self.broker.partitions(topic)))

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        self.assigned = list(tps)
        for tp in self.assigned:
            self.positions.setdefault(tp, self.broker.logs[tp.topic][tp.partition].start)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]:
        self.broker.check()
        return await self.broker.fetch(self.positions, self.assigned, timeout_s)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.logs[tp.topic][tp.partition].start for tp in tps}

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        self.broker.check()
        return {tp: self.broker.logs[tp.topic][tp.partition].end for tp in tps}


class MemoryProducer:
    unwritable: tuple[type[BaseException], ...] = (RecordTooLarge,)

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def start(self) -> None:
        self.broker.check()

    async def stop(self) -> None:
        pass

    async def send_many(self, outputs: Sequence[Output]) -> list[BaseException | None]:
        errors: list[BaseException | None] = []
        for out in outputs:
            try:
                self.broker.append(out.topic, out.key, out.value, out.headers or (), out.partition)
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors


class MemoryBackend:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def group_consumer(self, settings: GroupSettings) -> MemoryGroupConsumer:
        return MemoryGroupConsumer(self.broker, settings)

    def reader(self) -> MemoryReader:
        return MemoryReader(self.broker)

    def producer(self) -> MemoryProducer:
        return MemoryProducer(self.broker)
