"""The engine's guarantees on the memory backend: commit point, hand-over, state, zombies."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from tests.engine.memory import memory_engine
from tests.waiting import until
from worker.engine.backend import GroupSettings
from worker.engine.engine import Engine, EngineSettings, StageContext
from worker.engine.memory import MemoryBroker
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange, TopicPartition
from worker.engine.state import StoreSpec

IN, OUT, LOG = "in", "out", "counts-changelog"


class EchoStage:
    """Copies each record to OUT and counts keys in a store; can be told to hold records."""

    name = "echo"
    topics = (IN,)

    def __init__(self) -> None:
        self.ctx: StageContext | None = None
        self.queues: dict[int, asyncio.Queue[tuple[Lane, list[Record]]]] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.hold: set[bytes] = set()  # keys not finished until released
        self.release = asyncio.Event()
        self.notes: list[tuple[list[int], bool]] = []

    def built(self, ctx: StageContext) -> EchoStage:
        """The engine's stage factory: the stage gets its context when the engine is built."""
        self.ctx = ctx
        return self

    def submit(self, lane: Lane, records: list[Record]) -> None:
        self.queues[lane.tp.partition].put_nowait((lane, records))

    async def assigned(self, lanes: list[Lane]) -> None:
        for lane in lanes:
            p = lane.tp.partition
            self.queues[p] = asyncio.Queue()
            self.tasks[p] = asyncio.create_task(self._run(p))

    async def _run(self, p: int) -> None:
        assert self.ctx is not None
        while True:
            lane, records = await self.queues[p].get()
            if not lane.open:
                continue
            if any(r.key in self.hold for r in records):
                await self.release.wait()
            store = self.ctx.store("counts", p)
            counts: dict[str, int] = defaultdict(int)
            for r in records:
                counts[(r.key or b"").decode()] += 1
            changes = [
                StateChange("counts", p, k, (store.get(k) or 0) + n) for k, n in counts.items()
            ]
            outputs = [Output(OUT, r.key, r.value, source=r) for r in records]
            await self.ctx.write(outputs, changes, [(lane, r) for r in records])

    async def revoked(self, lanes: list[Lane], deadline: float) -> bool:
        for lane in lanes:
            task = self.tasks.pop(lane.tp.partition, None)
            if task is not None:
                task.cancel()
        return True

    async def handed_over(self, lanes: list[Lane], clean: bool) -> None:
        self.notes.append(([lane.tp.partition for lane in lanes], clean))


def engine_for(broker: MemoryBroker, stage: EchoStage) -> Engine:
    settings = EngineSettings(
        GroupSettings("g", 1.0, 0.1, 5.0, copartitioned=((IN,),)),
        stores=(StoreSpec("counts", IN, LOG),),
        commit_interval_s=0.05,
        hand_over_s=1.0,
    )
    return memory_engine(broker, settings, stage.built)


def broker_with(n: int, partitions: int = 2) -> MemoryBroker:
    broker = MemoryBroker()
    for topic in (IN, OUT, LOG):
        broker.create_topic(topic, partitions)
    for i in range(n):
        broker.append(IN, f"k{i % 5}".encode(), f"v{i}".encode())
    return broker


def committed(broker: MemoryBroker, p: int) -> int | None:
    return broker.group("g").committed.get(TopicPartition(IN, p))


async def test_every_record_is_written_and_committed_with_its_state() -> None:
    broker = broker_with(100)
    stage = EchoStage()
    engine = engine_for(broker, stage)
    await engine.start()
    try:
        ends = {p: len(broker.read(IN, p)) for p in range(2)}
        await until(lambda: all(committed(broker, p) == ends[p] for p in range(2)), 5.0)
        assert sorted(r.value for r in broker.read_all(OUT)) == sorted(
            r.value for r in broker.read_all(IN)
        )
        total = sum(v for s in engine.held_stores("counts") for _, v in s.items())
        assert total == 100
    finally:
        await engine.stop(2.0)


async def test_a_record_in_flight_holds_the_commit_of_everything_after_it() -> None:
    broker = broker_with(0, partitions=1)
    stage = EchoStage()
    stage.hold = {b"slow"}
    engine = engine_for(broker, stage)
    await engine.start()
    try:
        broker.append(IN, b"a", b"1")
        await until(lambda: committed(broker, 0) == 1, 5.0)
        broker.append(IN, b"slow", b"2")
        broker.append(IN, b"b", b"3")
        await asyncio.sleep(0.3)
        assert committed(broker, 0) == 1  # the held record stops the run
        stage.release.set()
        await until(lambda: committed(broker, 0) == 3, 5.0)
    finally:
        await engine.stop(2.0)


async def test_state_is_restored_by_the_next_holder_and_duplicates_are_not_counted_twice() -> None:
    broker = broker_with(40, partitions=1)
    first = EchoStage()
    e1 = engine_for(broker, first)
    await e1.start()
    await until(lambda: committed(broker, 0) == 40, 5.0)
    await e1.stop(2.0)
    assert first.notes and first.notes[-1][1] is True  # a clean hand-over
    second = EchoStage()
    e2 = engine_for(broker, second)
    await e2.start()
    try:
        await until(lambda: e2.held_store("counts", 0) is not None and e2.assignments > 0, 5.0)
        store = e2.store("counts", 0)
        assert sum(v for _, v in store.items()) == 40  # restored from the changelog
        broker.append(IN, b"k0", b"new")
        await until(lambda: committed(broker, 0) == 41, 5.0)
        assert store.get("k0") == 9
    finally:
        await e2.stop(2.0)


async def test_a_zombie_cannot_commit_and_cannot_confirm_its_membership() -> None:
    broker = broker_with(10, partitions=2)
    a, b = EchoStage(), EchoStage()
    ea, eb = engine_for(broker, a), engine_for(broker, b)
    await ea.start()
    await until(lambda: ea.assignments > 0 and len(ea.lanes) == 2, 5.0)
    lane = next(iter(ea.lanes.values()))
    assert await ea.confirm(lane)
    ea.consumer.expel()  # type: ignore[attr-defined]  (the memory backend's stall)
    await eb.start()
    try:
        await until(lambda: len(eb.lanes) == 2, 5.0)
        # The zombie still believes it holds its lanes; the broker refuses its commit.
        assert not await ea.commit_point.commit(list(ea.lanes.values()), force=True)
        assert not await ea.confirm(lane)
    finally:
        await ea.stop(2.0)
        await eb.stop(2.0)


async def test_a_partition_whose_commit_fell_below_the_log_start_names_the_lost_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = broker_with(0, partitions=1)
    for i in range(10):
        broker.append(IN, b"k", str(i).encode())
    broker.group("g").committed[TopicPartition(IN, 0)] = 2
    broker.delete_before(IN, 0, 6)  # retention took 2..5 before anyone processed them
    stage = EchoStage()
    engine = engine_for(broker, stage)
    await engine.start()
    try:
        await until(lambda: committed(broker, 0) == 10, 5.0)
        assert [r.value for r in broker.read_all(OUT)] == [b"6", b"7", b"8", b"9"]
    finally:
        await engine.stop(2.0)
    out = capsys.readouterr().out + capsys.readouterr().err
    assert "input_offsets_lost" in out and "first_lost" in out


async def test_a_zombie_s_hand_over_is_never_clean_even_with_nothing_new_to_commit() -> None:
    """The post stage notes `released` only after a clean hand-over: a zombie whose lanes
    have nothing new to commit must not count as clean (its commit would be refused)."""
    broker = broker_with(4, partitions=1)
    stage = EchoStage()
    engine = engine_for(broker, stage)
    await engine.start()
    await until(lambda: committed(broker, 0) == 4, 5.0)
    engine.consumer.expel()  # type: ignore[attr-defined]  (the memory backend's stall)
    try:
        await engine.on_revoked({TopicPartition(IN, 0)})
        assert stage.notes[-1] == ([0], False)
    finally:
        await engine.stop(2.0)


async def test_a_zombie_reads_its_state_again_when_its_partition_comes_back() -> None:
    """A worker stalled past its session keeps its stores for a quick return only if
    nobody wrote to their changelogs meanwhile: the holder that took over did. Found on
    Apache Kafka x3 (a SIGSTOPped worker posted again what the other had posted: its kept
    `started` marks lacked the other's). A hand-over that was not clean reads them again."""
    broker = broker_with(4, partitions=1)
    a, b = EchoStage(), EchoStage()
    ea, eb = engine_for(broker, a), engine_for(broker, b)
    await ea.start()
    try:
        await until(lambda: committed(broker, 0) == 4, 5.0)
        ea.consumer.expel()  # type: ignore[attr-defined]  (the memory backend's stall)
        await eb.start()
        await until(lambda: len(eb.lanes) == 1, 5.0)
        for i in range(6):
            broker.append(IN, b"k0", f"b{i}".encode())
        await until(lambda: committed(broker, 0) == 10, 5.0)  # the other holder's state: k0 = 7
        await eb.stop(2.0)
        assignments = ea.assignments
        ea.consumer.wake()  # type: ignore[attr-defined]
        await until(
            lambda: ea.assignments > assignments and ea.held_store("counts", 0) is not None, 5.0
        )
        assert a.notes[-1] == ([0], False)  # its hand-over was not clean
        broker.append(IN, b"k0", b"a-again")
        await until(lambda: committed(broker, 0) == 11, 5.0)
        assert ea.store("counts", 0).get("k0") == 8
    finally:
        await ea.stop(2.0)


async def test_a_paused_partition_whose_position_fell_below_the_log_start_is_never_reset_silently(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 26 N8: records deleted by retention while their partition was paused (held
    back by backpressure) are not skipped in silence, as a consumer's offset reset would:
    the engine names the lost offsets (log, flyt_input_offsets_lost_total) and reads on."""
    from prometheus_client import REGISTRY

    def lost() -> float:
        labels = {"topic": IN, "partition": "0"}
        return REGISTRY.get_sample_value("flyt_input_offsets_lost_total", labels) or 0.0

    before = lost()
    broker = broker_with(0, partitions=1)
    stage = EchoStage()
    engine = engine_for(broker, stage)
    await engine.start()
    try:
        broker.append(IN, b"k", b"0")
        await until(lambda: committed(broker, 0) == 1, 5.0)
        tp = TopicPartition(IN, 0)
        engine.consumer.pause({tp})
        for i in range(1, 8):
            broker.append(IN, b"k", str(i).encode())
        broker.delete_before(IN, 0, 5)  # 1..4 gone before anyone read them
        engine.consumer.resume({tp})
        await until(lambda: committed(broker, 0) == 8, 5.0)
        assert [r.value for r in broker.read_all(OUT)] == [b"0", b"5", b"6", b"7"]
    finally:
        await engine.stop(2.0)
    out = capsys.readouterr().out
    assert "input_offsets_lost" in out and "first_lost" in out
    assert lost() - before == 4
