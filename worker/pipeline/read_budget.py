"""How many submissions the posting loops hold read at once, across the post stage.

A loop's batch waits as bytes (~1.5 KB a submission) and is read when it is posted (~4.9
KB, with its receipt and its mutation's node ~7 KB). The few places to talk to Xledger
(`session.CONCURRENT_CALLS`) bound how many batches are read at once, not how large they
are: with 20 tenants at the month start, 16 backlog batches of 500 held ~57 MB read where
356 tenants' batches of ~140 held ~16 MB (memray). The budget bounds the submissions, so
the memory does not grow as the tenants get fewer and their batches larger.

A loop takes its batch's share before its call slot (a loop that waits here holds no slot)
and gives it back when the batch's outcomes are written. Shares are granted first come,
first served: a large batch is not passed over for ever by small ones. A batch larger than
the whole budget takes all of it and goes alone. Nothing is read fewer or posted later
than it would be in a smaller batch: the budget only decides when a batch is read, never
how it is gathered (a loop's records keep arriving in its queue while it waits).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

# Submissions read at once, in all loops together: one full mutation (250) for each of the
# 16 call slots. The month start's ~140 payments a tenant (50,000 over 356 tenants) fit in
# all 16; with 20 tenants, 8 backlog batches of 500 go at once (2,500 made the last
# outcome come 4 s later there, for 3 MB less).
READ_BUDGET = 4_000


class ReadBudget:
    def __init__(self, capacity: int = READ_BUDGET) -> None:
        if capacity < 1:
            raise ValueError("a read budget holds at least one submission")
        self.capacity = capacity
        self.taken = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def share(self, submissions: int) -> AsyncIterator[None]:
        """Held while a batch of `submissions` is read and posted (`async with`)."""
        n = max(1, min(submissions, self.capacity))
        if self._waiting or self.taken + n > self.capacity:
            granted = asyncio.get_running_loop().create_future()
            entry = (n, granted)
            self._waiting.append(entry)
            try:
                await granted
            except BaseException:
                if granted.done() and not granted.cancelled():
                    self._give_back(n)  # granted, and cancelled before it could use it
                else:
                    self._waiting.remove(entry)
                    self._grant()  # it may have been first, holding the others back
                raise
        else:
            self.taken += n
        try:
            yield
        finally:
            self._give_back(n)

    def _give_back(self, n: int) -> None:
        self.taken -= n
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            n, granted = self._waiting[0]
            if self.taken + n > self.capacity:
                return
            self._waiting.popleft()
            self.taken += n
            granted.set_result(None)
