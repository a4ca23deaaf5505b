"""A clock and a sleep in which nobody waits, for the Xledger client and the sandbox."""

from __future__ import annotations

import asyncio
import time


class FakeTime:
    """A clock and a sleep for the client in which nobody waits: a sleep moves the clock on
    at once. Limits' windows pass without the test waiting for them.

    By default the clock stands still between sleeps, so that a test can count seconds
    exactly. With `running=True` it also runs with the wall clock between sleeps: the
    sandbox's reset times are wall-clock instants, and a wait computed from one is only
    long enough when the time its answer took has passed on this clock too. With
    `hold=True` a sleep lasts until the test moves the clock with `advance`.
    """

    def __init__(self, *, running: bool = False, hold: bool = False) -> None:
        self.running = running
        self.hold = hold
        self.sleeps: list[float] = []  # every sleep asked for, in order
        self.sleeping = asyncio.Event()  # set once a sleep is being held (hold=True)
        self._started = time.monotonic()
        self._offset = 1_000.0  # where the clock began, plus every sleep and advance
        self._moved = asyncio.Event()

    @property
    def now(self) -> float:
        ran = time.monotonic() - self._started if self.running else 0.0
        return self._offset + ran

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if not self.hold:
            self._offset += seconds
            await asyncio.sleep(0)  # a sleep is a suspension point: the others run meanwhile
            return
        deadline = self.now + seconds
        while self.now < deadline:
            self.sleeping.set()
            self._moved.clear()
            await self._moved.wait()

    def advance(self, seconds: float) -> None:
        self._offset += seconds
        self._moved.set()
