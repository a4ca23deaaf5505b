"""Acknowledge a partition's events in offset order, whatever order they finish in.

faust commits the first run of consecutive acknowledged offsets of a partition, and its
check that the run starts where the last commit ended is skipped when nothing was
committed yet and is off by one otherwise (`faust/transport/consumer.py`, `_new_offset`).
The post stage finishes events out of order: one loop per tenant, and several tenants
share a partition. Acked straight to faust, a fast tenant's events committed the offsets
of a slow tenant's events still waiting to be posted; after a crash those were never
read again and their payments never posted (issue 14).

So an event is passed to faust only once every earlier event of its partition has
finished. A rebalance starts a new lane: faust forgets a revoked partition's
acknowledgements and reads it again from the committed offset, so an event of an older
generation is never acknowledged (it comes back, and posting looks up before it posts).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class _Lane:
    generation: int
    last_offset: int = -1
    waiting: deque[Ticket] = field(default_factory=deque)


@dataclass(eq=False)
class Ticket:
    """One tracked event; `finish` it when its outcome is on the broker."""

    event: Any
    offset: int
    lane: _Lane
    done: bool = False


class OrderedAcks:
    def __init__(self, ack: Callable[[Any], Awaitable[Any]], generation: Callable[[], int]) -> None:
        self._ack = ack
        self._generation = generation
        self._lanes: dict[Any, _Lane] = {}

    def track(self, event: Any) -> Ticket:
        """Call in delivery order, before the event is handed to a worker loop."""
        message = event.message
        generation = self._generation()
        lane = self._lanes.get(message.tp)
        # A new generation, or an offset not past the last one (the partition was read
        # again from its committed offset), starts a new lane.
        if lane is None or lane.generation != generation or message.offset <= lane.last_offset:
            lane = self._lanes[message.tp] = _Lane(generation)
        lane.last_offset = message.offset
        ticket = Ticket(event, message.offset, lane)
        lane.waiting.append(ticket)
        return ticket

    def stale(self, ticket: Ticket) -> bool:
        """True when a rebalance came between tracking and now: faust reads it again."""
        return (
            ticket.lane.generation != self._generation()
            or self._lanes.get(ticket.event.message.tp) is not ticket.lane
        )

    async def finish(self, ticket: Ticket) -> None:
        """Mark done; acknowledge the partition's finished events up to the first one
        still in flight, in offset order."""
        ticket.done = True
        if self.stale(ticket):
            return
        ready: list[Ticket] = []
        waiting = ticket.lane.waiting
        while waiting and waiting[0].done:
            ready.append(waiting.popleft())
        for t in ready:
            await self._ack(t.event)

    def in_flight(self) -> dict[Any, list[int]]:
        """Per partition, the offsets tracked and not yet acknowledged (diagnostics)."""
        return {tp: [t.offset for t in lane.waiting] for tp, lane in self._lanes.items()}

    def held(self) -> dict[Any, list[int]]:
        """Per partition, the offsets finished but held behind an earlier one in flight."""
        return {tp: [t.offset for t in lane.waiting if t.done] for tp, lane in self._lanes.items()}
