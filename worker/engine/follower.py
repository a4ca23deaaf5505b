"""Following whole topics from their first offset, outside any consumer group: every
worker reads every partition (the register snapshots, the tenants paused by hand), and
reading never moves a partition of the group. `FollowedTopic` is what every worker keeps
of such a topic: ready once it has read what the topic held at start."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable

from worker import logs
from worker.engine.backend import Reader
from worker.engine.records import Record, TopicPartition

log = logs.get("worker.engine")


class TopicFollower:
    """Calls `handle` for each record of `topic`, in offset order per partition, from the
    first offset on, and keeps following. `caught_up` is set once every partition has
    been read up to where it ended when the follower started."""

    def __init__(
        self,
        reader: Reader,
        topic: str,
        handle: Callable[[Record], None],
        on_caught_up: Callable[[], None] = lambda: None,
    ) -> None:
        self.reader = reader
        self.topic = topic
        self.handle = handle
        self.on_caught_up = on_caught_up
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reader.start()
        partitions = await self.reader.partitions(self.topic)
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions")
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.reader.assign(tps)
        firsts = await self.reader.beginning_offsets(tps)
        for tp in tps:
            self.reader.seek(tp, firsts[tp])
        ends = await self.reader.end_offsets(tps)
        behind = {tp: end for tp, end in ends.items() if end > firsts[tp]}
        self._task = asyncio.create_task(self._run(behind), name=f"follow-{self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.reader.stop()

    async def _run(self, behind: dict[TopicPartition, int]) -> None:
        if not behind:
            self._caught_up()
        while True:
            try:
                batches = await self.reader.poll(0.5)
            except Exception as exc:  # the broker is away: keep trying
                log.warning("follow_failed", topic=self.topic, error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self.handle(record)
            if behind:
                for tp in list(behind):
                    if await self.reader.position(tp) >= behind[tp]:
                        del behind[tp]
                if not behind:
                    self._caught_up()

    def _caught_up(self) -> None:
        self.caught_up.set()
        self.on_caught_up()


class FollowedTopic(ABC):
    """Every worker's copy of a whole topic, kept by following it (`TopicFollower`): a
    subclass says what a record does to the copy (`_apply`) and what to say once it is
    ready (`_caught_up`), which is before any stage may rely on the copy."""

    def __init__(self, reader: Reader, topic: str) -> None:
        self.topic = topic
        self._follower = TopicFollower(reader, topic, self._apply, self._caught_up)

    @property
    def ready(self) -> asyncio.Event:
        """Set once every partition is read up to where it ended at start."""
        return self._follower.caught_up

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout_s)

    @abstractmethod
    def _apply(self, record: Record) -> None: ...

    @abstractmethod
    def _caught_up(self) -> None: ...
