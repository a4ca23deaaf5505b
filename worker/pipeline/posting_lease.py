"""Who may post a submissions partition's payments to Xledger, and when a new holder may
look them up (engine.md, Hand-over and Zombies; R14, decided 12-06).

The holder's note, in the partition's `posting` store (on the broker):
- `held` with `until` (wall clock): the holder may begin a mutation only before `until`
  (a lease). It renews the lease, on the broker, before a mutation that would begin
  after half of it has run. The lease bounds when the last holder's last mutation can
  have begun, whatever happened to that holder afterwards;
- `released`: the last holder handed the partition over cleanly: its hand-over was
  committed, every mutation it began had its answer and its outcomes were written.

A new holder that finds `held` (the last holder died, stalled, had a mutation cut, or had
one whose outcome is still unknown) waits until the settle time has passed since the
lease's end before its first lookup there: a mutation of the last holder may still be
stored by Xledger until then. Nothing (no note at all: a new consumer group, lost
internal topics) means no holder of this group ever posted: the lookup before every first
mutation (the client) is what keeps a payment from being posted twice then.

The fence, asked by the client right before a mutation's bytes leave: the lane is still
open, the lease is renewed if needed (a write to the broker, which may take a while),
then membership is confirmed (commit.py: recently enough that the group cannot have given
the partition to another worker, whose lookup would miss this mutation), and both still
hold at the moment of sending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from worker.engine.engine import StageContext
from worker.engine.offsets import Lane
from worker.engine.records import StateChange
from worker.pipeline.topics import POSTING

HOLDER = "\x00holder"  # the posting store's key of the note
LEASE_S = 5.0  # how long after a note a mutation may still begin
CLOCK_MARGIN_S = 1.0  # for the skew between two workers' wall clocks
FENCE_TRIES = 3


def takeover_wait(note: dict[str, Any] | None, settle_s: float, now: float) -> float:
    """Seconds a new holder waits before its first lookup, given the note it found."""
    if not note or note.get("state") != "held":
        return 0.0
    # `mutation_at`: the note of a worker from before the lease (when its mutation began).
    until = note.get("until", note.get("mutation_at"))
    if until is None:  # held, but no mutation was ever begun under it
        return 0.0
    return max(0.0, float(until) + settle_s + CLOCK_MARGIN_S - now)


def note_change(partition: int, state: str, until: float | None) -> StateChange:
    note = {"state": state, "until": until, "at": datetime.now(UTC).isoformat()}
    return StateChange(POSTING, partition, HOLDER, note)


class Lease:
    """The holder's lease of one holding of a partition (`Lane`)."""

    def __init__(
        self, ctx: StageContext, lane: Lane, clock: Callable[[], float] = time.time
    ) -> None:
        self.ctx = ctx
        self.lane = lane
        self.clock = clock
        # The last holder's lease, kept in our first note: if we die before we renew it,
        # the next holder still waits for the last holder's mutations.
        self.until: float | None = None
        self._renewing = asyncio.Lock()

    @property
    def partition(self) -> int:
        return self.lane.tp.partition

    def found(self) -> dict[str, Any] | None:
        note: dict[str, Any] | None = self.ctx.store(POSTING, self.partition).get(HOLDER)
        return note

    async def take(self) -> None:
        """Note that this worker holds the partition now (the last lease kept in it)."""
        last = self.found() or {}
        until = last.get("until", last.get("mutation_at")) if last.get("state") == "held" else None
        self.until = until
        await self.ctx.write([], [note_change(self.partition, "held", until)])

    async def release(self) -> None:
        """The hand-over was clean: a new holder need not wait."""
        await self.ctx.write([], [note_change(self.partition, "released", None)])

    def valid(self) -> bool:
        return self.until is not None and self.clock() < self.until

    async def renew_if_needed(self) -> None:
        async with self._renewing:
            now = self.clock()
            if self.until is not None and self.until - now > LEASE_S / 2:
                return
            until = now + LEASE_S
            await self.ctx.write([], [note_change(self.partition, "held", until)])
            self.until = until

    async def fence(self) -> bool:
        """May a mutation for this lane leave now? (See the module's docstring.)"""
        for _ in range(FENCE_TRIES):
            if not self.lane.open:
                return False
            await self.renew_if_needed()  # the write first ...
            if not await self.ctx.confirm(self.lane):  # ... then membership ...
                return False
            if self.lane.open and self.valid():  # ... and both still hold as it leaves
                return True
        return False
