"""Per-partition pause and resume (`worker/engine/backpressure.py`): a partition with more
undone records than the limit is paused, resumed once below half of it, and forgotten
when handed over. On the memory backend's consumer, then through the engine."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from tests.engine.memory import memory_engine
from tests.waiting import until
from worker.engine.backend import GroupSettings
from worker.engine.backpressure import Backpressure
from worker.engine.engine import EngineSettings, StageContext
from worker.engine.memory import MemoryBroker, MemoryGroupConsumer
from worker.engine.offsets import Lane
from worker.engine.records import Record, TopicPartition

IN = "bp-engine"  # each test its own topic: the paused gauge is the process's
TP = TopicPartition(IN, 0)


def consumer(topic: str) -> MemoryGroupConsumer:
    broker = MemoryBroker()
    broker.create_topic(topic, 2)
    return MemoryGroupConsumer(broker, GroupSettings("bp", 1.0, 0.1, 5.0))


def handed(lane: Lane, first: int, n: int) -> list[Record]:
    """`n` records from offset `first` handed to the lane's stage (undone until done)."""
    tp = lane.tp
    return lane.hand(
        [Record(tp.topic, tp.partition, o, b"k", b"v") for o in range(first, first + n)]
    )


def gauge(tp: TopicPartition) -> float | None:
    return REGISTRY.get_sample_value(
        "flyt_partition_paused", {"topic": tp.topic, "partition": str(tp.partition)}
    )


def test_a_partition_over_the_limit_is_paused_and_resumed_once_below_half_of_it() -> None:
    tp, other_tp = TopicPartition("bp-limit", 0), TopicPartition("bp-limit", 1)
    c = consumer(tp.topic)
    bp = Backpressure(c, high=10)
    lane, other = Lane(tp, 0), Lane(other_tp, 0)
    handed(lane, 0, 10)
    handed(other, 0, 3)
    bp.check([lane, other])
    assert not c.paused  # at the limit is not over it
    handed(lane, 10, 1)
    bp.check([lane, other])
    assert c.paused == {tp} and bp.paused == {tp} and gauge(tp) == 1  # the other reads on
    for offset in range(6):
        lane.done(offset)
    bp.check([lane, other])
    assert c.paused == {tp}  # 5 undone: not below half of 10 yet
    lane.done(6)
    bp.check([lane, other])
    assert not c.paused and not bp.paused and gauge(tp) == 0


def test_a_lane_being_handed_over_is_not_paused() -> None:
    c = consumer("bp-revoking")
    bp = Backpressure(c, high=4)
    lane = Lane(TopicPartition("bp-revoking", 0), 0)
    handed(lane, 0, 9)
    lane.revoking = True  # takes no new work: its records finish or go to the next holder
    bp.check([lane])
    assert not c.paused and not bp.paused


def test_forget_drops_the_pause_of_lanes_handed_over_and_never_resumes_them_later() -> None:
    tp = TopicPartition("bp-forget", 0)
    c = consumer(tp.topic)
    bp = Backpressure(c, high=4)
    lane = Lane(tp, 0)
    handed(lane, 0, 5)
    bp.check([lane])
    assert bp.paused == {tp} and gauge(tp) == 1
    bp.forget([lane])
    assert not bp.paused and gauge(tp) == 0
    # The partition comes back: the engine pauses it until its state is restored. The
    # new lane has nothing undone, and backpressure must not resume what it did not pause.
    c.pause([tp])
    bp.check([Lane(tp, 5)])
    assert c.paused == {tp}


class Holding:
    """Takes every record and finishes none until `release` is set."""

    name = "holding"
    topics = (IN,)

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.got: list[Record] = []
        self.release = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def submit(self, lane: Lane, records: list[Record]) -> None:
        self.got += records
        task = asyncio.get_running_loop().create_task(self._finish(lane, records))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _finish(self, lane: Lane, records: list[Record]) -> None:
        await self.release.wait()
        await self.ctx.write([], (), [(lane, r) for r in records])

    async def assigned(self, lanes: list[Lane]) -> None:
        pass

    async def revoked(self, lanes: list[Lane], deadline: float) -> bool:
        return True

    async def handed_over(self, lanes: list[Lane], clean: bool) -> None:
        pass


async def test_the_engine_pauses_a_partition_its_stage_is_behind_on_until_it_drains() -> None:
    broker = MemoryBroker()
    broker.create_topic(IN, 1)
    for i in range(20):
        broker.append(IN, b"k", str(i).encode(), partition=0)
    settings = EngineSettings(
        GroupSettings("bp-engine", 1.0, 0.1, 5.0, copartitioned=((IN,),)),
        commit_interval_s=0.05,
        hand_over_s=1.0,
        max_undone_per_partition=8,
    )
    engine = memory_engine(broker, settings, Holding)
    [stage] = engine.stages
    assert isinstance(stage, Holding)
    await engine.start()
    try:
        await until(lambda: TP in engine.backpressure.paused, 5.0)
        assert TP in engine.consumer.paused  # type: ignore[attr-defined]
        for i in range(20, 25):  # fewer than the limit: once resumed, it stays so
            broker.append(IN, b"k", str(i).encode(), partition=0)
        await asyncio.sleep(0.5)  # polls come and go: a paused partition fetches nothing
        assert len(stage.got) == 20
        stage.release.set()
        await until(lambda: len(stage.got) == 25, 5.0)  # resumed
        await until(lambda: broker.group("bp-engine").committed.get(TP) == 25, 5.0)
        assert not engine.backpressure.paused
        assert TP not in engine.consumer.paused  # type: ignore[attr-defined]
    finally:
        await engine.stop(2.0)
