"""A loop per key: one task that works one key's items in order (a partition's batches in the
enrich stage, a tenant's submissions within one holding of a partition in the post stage),
so that a slow key never holds up another and one key's work never runs twice at once.

`put` never blocks (the consumer loop hands items in). The loop's body marks the steps that
must not be cut (`critical`, or `begin_critical`/`end_critical` where the step starts inside
a call it does not own, such as the moment an Xledger mutation is about to leave):
`stop(deadline)` lets such a step finish by the deadline and cancels everything else at
once. It says whether it had to cut one, so a hand-over can be marked unclean.

A body that fails stops the worker (`fail`): a restart resumes from the committed offsets,
which is always safe; going on without knowing what a failed step did is not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Iterator
from typing import Generic, TypeVar

from worker import logs
from worker.engine.delivery import DeliveryAbandoned

log = logs.get("worker.engine")

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class KeyLoop(Generic[T]):
    def __init__(
        self,
        name: str,
        body: Callable[[KeyLoop[T]], Awaitable[None]],
        fail: Callable[[BaseException], None],
    ) -> None:
        self.name = name
        self.queue: asyncio.Queue[T] = asyncio.Queue()
        self._calm = asyncio.Event()  # set while no critical step runs
        self._calm.set()
        self._fail = fail
        self.task = asyncio.create_task(self._run(body), name=name)

    def put(self, item: T) -> None:
        self.queue.put_nowait(item)

    @property
    def in_critical(self) -> bool:
        return not self._calm.is_set()

    def begin_critical(self) -> None:
        self._calm.clear()

    def end_critical(self) -> None:
        self._calm.set()

    @contextlib.asynccontextmanager
    async def critical(self) -> AsyncIterator[None]:
        self.begin_critical()
        try:
            yield
        finally:
            self.end_critical()

    async def stop(self, deadline: float) -> bool:
        """Let a critical step finish (by `deadline`, loop time), then end the loop; False
        when a critical step was still running at the deadline and had to be cut."""
        calm = True
        if self.in_critical:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._calm.wait()
            except TimeoutError:
                calm = False
                log.error("key_loop_cut", loop=self.name)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        return calm

    async def _run(self, body: Callable[[KeyLoop[T]], Awaitable[None]]) -> None:
        try:
            await body(self)
        except asyncio.CancelledError:
            raise
        except DeliveryAbandoned as exc:  # the worker is stopping with its brokers gone
            log.warning("key_loop_stopped_before_writing", loop=self.name, error=str(exc))
        except Exception as exc:
            log.exception("key_loop_failed", loop=self.name, error=repr(exc))
            self._fail(exc)


class KeyLoops(Generic[K, T]):
    """The loops of a stage, by key; stopped together when their partitions go."""

    def __init__(self, fail: Callable[[BaseException], None]) -> None:
        self._fail = fail
        self._loops: dict[K, KeyLoop[T]] = {}

    def get(self, key: K) -> KeyLoop[T] | None:
        return self._loops.get(key)

    def start(self, key: K, name: str, body: Callable[[KeyLoop[T]], Awaitable[None]]) -> KeyLoop[T]:
        loop = self._loops.get(key)
        if loop is None:
            loop = self._loops[key] = KeyLoop(name, body, self._fail)
        return loop

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._loops))

    def values(self) -> list[KeyLoop[T]]:
        return list(self._loops.values())

    async def stop(self, keys: Iterable[K], deadline: float) -> bool:
        """Stop these keys' loops (each as `KeyLoop.stop`), together; False if any cut a
        critical step."""
        loops = [self._loops.pop(k) for k in list(keys) if k in self._loops]
        calm = await asyncio.gather(*(loop.stop(deadline) for loop in loops))
        return all(calm)
