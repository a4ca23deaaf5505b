"""The stream engine: one consumer group over the input topics, stages that process what
it reads, partition state, one producer, and one commit point.

- **Consumer loop** (`_poll`): fetches batches and hands each partition's new records to
  the stage that reads its topic (`Stage.submit`, which must not block: stages queue).
  Records are tracked per holding of a partition (`offsets.Lane`).
- **Rebalance listener** (`on_revoked`, `on_assigned`): the hand-over of engine.md.
  On revoke: stop handing out records of those partitions; let the stages finish their
  in-flight work for them (an Xledger request finishes or reaches its hard deadline) and
  write its outputs and state; commit; only then return. On assign: restore the
  partitions' state from the changelogs, then seek each to the group's committed offset
  (the first offset where the group never committed), then hand out records; meanwhile
  the partitions are paused (the restore runs beside the heartbeat, not inside the
  callback: a long restore there would cost the membership).
- **Writer** (`writer.py`): outputs, then state, then done. **Commit point**
  (`commit.py`): when an offset may be committed; every `commit_interval_s`.
- **Backpressure** (`backpressure.py`): a partition with too many undone records is paused.

Stages never touch offsets or the client: each is built with a `StageContext` (what it
may use of the engine: write, its stores, how far behind a partition is, membership,
fail), gets records with their lane, and finishes them through `write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from worker import logs, metrics
from worker.engine.backend import Backend, GroupSettings, PositionLost, RebalanceListener
from worker.engine.backpressure import Backpressure
from worker.engine.commit import CommitPoint
from worker.engine.delivery import Delivery, Shrink, Unwritable
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange, TopicPartition
from worker.engine.restore import remember_ends, restore
from worker.engine.state import PartitionStore, StoreSpec
from worker.engine.writer import Writer

log = logs.get("worker.engine")


class StageContext(Protocol):
    """What a stage may use of the engine, given when the stage is built."""

    async def write(
        self,
        outputs: list[Output],
        changes: Iterable[StateChange] = (),
        done: Iterable[tuple[Lane, Record]] = (),
    ) -> set[int]:
        """Outputs, then state, then done (`writer.py`); the ids of dead-lettered sources."""
        ...

    def store(self, name: str, partition: int) -> PartitionStore:
        """A held partition's store (KeyError when the partition is not held here)."""
        ...

    def behind(self, tp: TopicPartition, offset: int) -> int:
        """Records of the partition after `offset`, as of the last fetch (0: unknown)."""
        ...

    async def confirm(self, lane: Lane) -> bool:
        """May work that must never run on two workers at once start now for `lane`?"""
        ...

    def fail(self, exc: BaseException) -> None:
        """Stop the worker: a restart resumes from the committed offsets."""
        ...


class Stage(Protocol):
    """A processing stage. Records are handed in offset order per partition."""

    name: str
    topics: tuple[str, ...]

    def submit(self, lane: Lane, records: list[Record]) -> None:
        """Take these records of `lane` (queue them: never block the consumer loop)."""

    async def assigned(self, lanes: list[Lane]) -> None:
        """These partitions are now held, their state restored."""

    async def revoked(self, lanes: list[Lane], deadline: float) -> bool:
        """Hand over: take no new work for these lanes, finish (or abandon, by
        `deadline`, loop time) the work in flight, its outputs and state written. False
        when work whose effect outside the broker is unknown had to be abandoned (an
        Xledger mutation cut, or one whose outcome is still unknown): the hand-over is
        then unclean, whatever the commit says."""

    async def handed_over(self, lanes: list[Lane], clean: bool) -> None:
        """After the hand-over's commit (`clean`: the broker took it, this worker was
        still a member, and no stage abandoned work in flight): the last word on these
        lanes before they close."""


@dataclass(frozen=True)
class EngineSettings:
    group: GroupSettings
    stores: tuple[StoreSpec, ...] = ()
    commit_interval_s: float = 0.5
    broker_timeout_s: float = 10.0  # a commit or offsets request not answered by then failed
    # How long a revoke lets in-flight work run: longer than one Xledger request's hard
    # deadline (the rebalance timeout must exceed it, plus the time to flush).
    hand_over_s: float = 20.0
    # A mutation starts only if membership was confirmed this recently (engine.md, "Zombies").
    membership_window_s: float = 0.0
    max_undone_per_partition: int = 20_000


StageFactory = Callable[[StageContext], Stage]


class Engine(RebalanceListener):
    def __init__(
        self,
        backend: Backend,
        settings: EngineSettings,
        stages: Iterable[StageFactory],
        *,
        unwritable: Unwritable | None = None,
        shrink: Shrink | None = None,
    ) -> None:
        self.backend = backend
        self.s = settings
        self.consumer = backend.group_consumer(settings.group)
        self.producer = backend.producer()
        self.lanes: dict[TopicPartition, Lane] = {}
        self._specs = settings.stores
        self._stores: dict[tuple[str, int], PartitionStore] = {}  # held ones, and cached
        self._held: set[tuple[str, int]] = set()
        self.stopping = False
        self.commit_point = CommitPoint(
            self.consumer,
            timeout_s=settings.broker_timeout_s,
            membership_window_s=settings.membership_window_s,
        )
        stopping = lambda: self.stopping  # noqa: E731 (read when a write fails)
        self.writer = Writer(
            Delivery(self.producer, unwritable, shrink, stopping),
            Delivery(self.producer, unwritable, None, stopping),
            self.held_store,
        )
        self.backpressure = Backpressure(self.consumer, settings.max_undone_per_partition)
        self.started = False
        self.rebalancing = True  # until the first assignment is prepared
        self.assignments = 0  # prepared assignments so far
        self._preparing: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: asyncio.Future[BaseException] | None = None
        # Built last, with what they may use of the engine (arroyo's `create(commit)`).
        self.stages: list[Stage] = [make(self) for make in stages]
        self._stage_of: dict[str, Stage] = {t: st for st in self.stages for t in st.topics}

    def stage(self, name: str) -> Stage:
        return next(st for st in self.stages if st.name == name)

    # --- for stages ----------------------------------------------------------------------

    async def write(
        self,
        outputs: list[Output],
        changes: Iterable[StateChange] = (),
        done: Iterable[tuple[Lane, Record]] = (),
    ) -> set[int]:
        """Outputs, then state, then done (`writer.py`); the ids of dead-lettered sources."""
        return await self.writer.write(outputs, changes, done)

    def held_store(self, name: str, partition: int) -> PartitionStore | None:
        key = (name, partition)
        return self._stores[key] if key in self._held else None

    def store(self, name: str, partition: int) -> PartitionStore:
        store = self.held_store(name, partition)
        if store is None:
            raise KeyError(f"store {name} of partition {partition} is not held here")
        return store

    def held_stores(self, name: str) -> list[PartitionStore]:
        return [self._stores[k] for k in sorted(self._held) if k[0] == name]

    def behind(self, tp: TopicPartition, offset: int) -> int:
        """How many records of the partition come after `offset`, fetched or not, as of
        the last fetch (0 when unknown): a stage's sign that it is working off a backlog."""
        end = self.consumer.highwater(tp)
        return max(0, end - offset - 1) if end is not None else 0

    async def confirm(self, lane: Lane) -> bool:
        """May work that must never run on two workers at once (an Xledger mutation) start
        now for `lane`? Only while it is open and membership is confirmed (commit.py)."""
        if not lane.open:
            return False
        return await self.commit_point.confirm_membership(list(self.lanes.values()))

    def fail(self, exc: BaseException) -> None:
        """Stop the worker: a restart resumes from the committed offsets."""
        if self.failure is not None and not self.failure.done():
            log.error("engine_failed", error=repr(exc))
            self.failure.set_result(exc)

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.failure = asyncio.get_running_loop().create_future()
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(sorted(self._stage_of), self)
        self._tasks = [
            asyncio.create_task(self._guard(self._poll), name="engine-poll"),
            asyncio.create_task(self._guard(self._commit_loop), name="engine-commit"),
        ]
        self.started = True

    async def stop(self, grace_s: float = 10.0, deadline: float | None = None) -> None:
        """Hand everything over (as on a revoke), then leave the group: done by `deadline`
        (loop time; default: `grace_s` from now), whatever the brokers do (a clean stop
        even when they are gone: what cannot be said to them in time is left unsaid)."""
        if self.stopping:
            return
        self.stopping = True
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + grace_s
        for task in self._tasks[:1]:  # the consumer loop: hand out nothing more
            task.cancel()
        if self._preparing is not None:
            self._preparing.cancel()
        # Most of the time for the hand-over; the rest for the clients to say goodbye.
        reserve = min(2.0, 0.25 * max(0.0, deadline - loop.time()))
        try:
            async with asyncio.timeout_at(deadline - reserve):
                await self._hand_over(list(self.lanes.values()), deadline - 1.5 * reserve)
        except TimeoutError:
            log.warning("engine_stop_hand_over_timed_out")
        for task in self._tasks:
            task.cancel()
        for close in (self.consumer.stop, self.producer.stop):
            try:
                async with asyncio.timeout(max(0.1, min(1.0, deadline - loop.time()))):
                    await close()
            except TimeoutError:
                log.warning("engine_client_stop_timed_out")
        self.started = False

    async def _guard(self, body: Callable[[], Awaitable[None]]) -> None:
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: stop the worker rather than stall
            log.exception("engine_task_crashed", error=repr(exc))
            self.fail(exc)

    # --- the consumer loop ---------------------------------------------------------------

    async def _poll(self) -> None:
        failing_since: float | None = None
        while not self.stopping:
            try:
                batches = await self.consumer.poll(0.1)
            except PositionLost as exc:
                await self._positions_lost(exc.positions)
                continue
            except Exception as exc:  # the broker is unreachable: keep trying, say so once
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.error("consumer_poll_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            failing_since = None
            for tp, records in batches.items():
                lane = self.lanes.get(tp)
                if lane is None or not lane.open:
                    continue  # revoked meanwhile: whoever holds it now reads it again
                fresh = lane.hand(records)
                if fresh:
                    self._stage_of[tp.topic].submit(lane, fresh)
            self.backpressure.check(self.lanes.values())

    async def _positions_lost(self, positions: dict[TopicPartition, int]) -> None:
        """Partitions whose next record is no longer on the broker (retention deleted it
        while the partition was paused or behind; or the topic was made again): never a
        silent reset. Said with the lost offsets, counted, and read on from the first
        offset the broker still has."""
        async with asyncio.timeout(self.s.broker_timeout_s):
            firsts = await self.consumer.beginning_offsets(positions)
        for tp, position in positions.items():
            first = firsts[tp]
            if position < first:
                self._lost(tp, position, first)
            else:  # past the end: the topic was emptied or made again; lose nothing new
                log.error(
                    "input_position_past_end",
                    topic=tp.topic,
                    partition=tp.partition,
                    position=position,
                    action="the topic was deleted and made again, or truncated: check that "
                    "nothing was lost at the source; reading on from its first offset",
                )
            self.consumer.seek(tp, first)
            lane = self.lanes.get(tp)
            if lane is not None:
                lane.skip_to(first)

    def _lost(self, tp: TopicPartition, first_lost: int, first: int) -> None:
        metrics.INPUT_OFFSETS_LOST.labels(tp.topic, str(tp.partition)).inc(first - first_lost)
        log.error(
            "input_offsets_lost",
            topic=tp.topic,
            partition=tp.partition,
            first_lost=first_lost,
            last_lost=first - 1,
            action="the broker deleted these records (retention) before the worker "
            "processed them: find them at their source and send them again",
        )

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.commit_interval_s)
            await self.commit_point.commit(list(self.lanes.values()))

    # --- the rebalance listener ----------------------------------------------------------

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.rebalancing = True
        if self._preparing is not None:
            self._preparing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._preparing
            self._preparing = None
        lanes = [self.lanes[tp] for tp in partitions if tp in self.lanes]
        if lanes:
            metrics.REBALANCES.labels("revoked").inc()
            deadline = asyncio.get_running_loop().time() + self.s.hand_over_s
            await self._hand_over(lanes, deadline)

    async def _hand_over(self, lanes: list[Lane], deadline: float) -> None:
        """Revoke: no new work, in-flight work finishes by `deadline`, commit, close."""
        if not lanes:
            return
        for lane in lanes:
            lane.revoking = True
        finished = False
        try:
            async with asyncio.timeout_at(deadline + 1.0):  # stages bound themselves
                calm = await asyncio.gather(
                    *(stage.revoked(ls, deadline) for stage, ls in self._by_stage(lanes))
                )
            finished = all(calm)
        except TimeoutError:
            log.error("hand_over_timed_out", partitions=[str(lane.tp) for lane in lanes])
        # Forced: even with nothing new to commit, the broker must take a commit from this
        # member, or the hand-over is not clean (a zombie's commit is refused).
        committed = await self.commit_point.commit(lanes, force=True)
        clean = committed and finished
        try:
            async with asyncio.timeout(self.s.broker_timeout_s):
                for stage, ls in self._by_stage(lanes):
                    await stage.handed_over(ls, clean)
        except TimeoutError:
            log.warning("hand_over_note_timed_out")
        released = []
        for lane in lanes:
            lane.close()
            self.lanes.pop(lane.tp, None)
            for spec in self._specs:
                key = (spec.name, lane.tp.partition)
                if spec.topic == lane.tp.topic and key in self._held:
                    self._held.discard(key)
                    released.append(self._stores[key])
        self.backpressure.forget(lanes)
        if not committed:
            # The group may have moved on before this member knew (a stall past its
            # session): another holder may have written to these changelogs meanwhile, and
            # their ends now would vouch for a map that lacks it. Read them again on return.
            for store in released:
                store.released_at = None
        elif released and not self.stopping:
            try:
                async with asyncio.timeout(self.s.broker_timeout_s):
                    await remember_ends(self.backend.reader, released)
            except TimeoutError:
                for store in released:
                    store.released_at = None
        log.info(
            "partitions_handed_over",
            partitions=sorted(str(lane.tp) for lane in lanes),
            committed=committed,
            clean=clean,
        )

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        # Paused until restored and positioned; the restore runs beside the heartbeat.
        self.consumer.pause(partitions)
        self._preparing = asyncio.create_task(
            self._guard(functools.partial(self._prepare, sorted(partitions))),
            name="engine-prepare",
        )

    async def _prepare(self, tps: list[TopicPartition]) -> None:
        for attempt in range(1, 6):
            try:
                await self._restore_and_seek(tps)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker hiccup: try again, then give up (restart)
                if attempt == 5:
                    raise
                log.warning("assignment_not_prepared", attempt=attempt, error=repr(exc))
                await asyncio.sleep(attempt)
        lanes = [self.lanes[tp] for tp in tps]
        for stage, ls in self._by_stage(lanes):
            await stage.assigned(ls)
        self.consumer.resume(tps)
        self.assignments += 1
        self.rebalancing = False
        metrics.REBALANCES.labels("assigned").inc()
        for topic in sorted(self._stage_of):
            metrics.ASSIGNED_PARTITIONS.labels(topic).set(sum(1 for tp in tps if tp.topic == topic))
        log.info("partitions_assigned", partitions=[str(tp) for tp in tps])

    async def _restore_and_seek(self, tps: list[TopicPartition]) -> None:
        stores = []
        for tp in tps:
            for spec in self._specs:
                if spec.topic == tp.topic:
                    key = (spec.name, tp.partition)
                    store = self._stores.get(key)
                    if store is None:
                        store = self._stores[key] = PartitionStore(spec, tp.partition)
                    stores.append(store)
        await restore(self.backend.reader, stores)
        for store in stores:
            self._held.add((store.spec.name, store.partition))
        async with asyncio.timeout(self.s.broker_timeout_s):
            firsts = await self.consumer.beginning_offsets(tps)
            committed = {tp: await self.consumer.committed(tp) for tp in tps}
        for tp in tps:
            start = firsts[tp]
            c = committed[tp]
            if c is not None and c < start:
                self._lost(tp, c, start)  # retention deleted records nobody processed
            elif c is not None:
                start = c
            self.consumer.seek(tp, start)
            self.lanes[tp] = Lane(tp, start)

    def _by_stage(self, lanes: list[Lane]) -> list[tuple[Stage, list[Lane]]]:
        out: dict[str, tuple[Stage, list[Lane]]] = {}
        for lane in lanes:
            stage = self._stage_of[lane.tp.topic]
            out.setdefault(stage.name, (stage, []))[1].append(lane)
        return list(out.values())
