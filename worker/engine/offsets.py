"""Which input offsets of a partition are done, and how far a commit may go.

A `Lane` is one holding of one input partition: made when the partition is assigned
(starting at the offset the engine seeked to), closed when it is revoked. Records are
handed to a stage in offset order and finish in any order (the post stage has a loop
per tenant, and several tenants share a partition); the commit may only pass a run of
done records with no hole (`commit.py`). A record of a closed lane is never done: its
partition is read again by whoever holds it now.
"""

from __future__ import annotations

from collections import deque
from itertools import count

from worker.engine.records import Record, TopicPartition

_lane_ids = count(1)


class Lane:
    def __init__(self, tp: TopicPartition, start: int) -> None:
        self.tp = tp
        self.id = next(_lane_ids)  # tells holdings of the same partition apart (logs)
        self.committed = start  # the next offset to read after a restart
        self.next_offset = start  # the next offset expected from the fetcher
        self.revoking = False  # being handed over: no new work, in-flight work finishes
        self.closed = False  # handed over: nothing of it is done or committed any more
        self._waiting: deque[int] = deque()  # handed offsets, in order, not yet committed
        self._done: set[int] = set()
        self.undone = 0  # handed and not done: what backpressure counts

    def hand(self, records: list[Record]) -> list[Record]:
        """The records a stage may take: those not handed before (a fetch from before a
        seek may repeat some), in order. Returns them, now tracked."""
        fresh = [r for r in records if r.offset >= self.next_offset]
        if fresh:
            self._waiting.extend(r.offset for r in fresh)
            self.next_offset = fresh[-1].offset + 1
            self.undone += len(fresh)
        return fresh

    def done(self, offset: int) -> None:
        """The record at `offset` has its outputs and state on the broker."""
        if self.closed or offset in self._done or offset < self.committed:
            return
        self._done.add(offset)
        self.undone -= 1

    def committable(self) -> int:
        """The offset a commit may name now: after the longest run of done offsets from
        the last commit (a hole stops it)."""
        waiting, done = self._waiting, self._done
        while waiting and waiting[0] in done:
            done.discard(waiting.popleft())
        # Nothing waits: everything handed is done, so the commit may pass all of it,
        # including offsets the fetcher skipped (transaction markers, compacted gaps).
        return waiting[0] if waiting else self.next_offset

    def committed_to(self, offset: int) -> None:
        self.committed = max(self.committed, offset)

    def skip_to(self, offset: int) -> None:
        """The records before `offset` that were not handed yet are gone from the broker
        (said and counted by the engine): a commit may pass them."""
        self.next_offset = max(self.next_offset, offset)

    @property
    def open(self) -> bool:
        """True while the lane takes new work."""
        return not (self.revoking or self.closed)

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return (
            f"Lane({self.tp}, committed={self.committed}, next={self.next_offset}, "
            f"undone={self.undone}, closed={self.closed})"
        )
