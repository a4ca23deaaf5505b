"""The commit point: the one place that says when an input offset may be committed.

`CommitPoint.commit` commits, for each input partition this worker holds, offset c+1
only when, in this order:
1. every record from the last commit up to c is done: the lane's contiguous run of done
   offsets (`offsets.Lane.committable`); a hole (a record still in flight, or one never
   done because its stage gave it up) stops the run there;
2. every output of those records was acknowledged by the broker (acks=all): a stage marks
   a record done only through `Writer.write`, after its outputs are acknowledged;
3. every state change of those records was acknowledged by the broker: `Writer.write`
   writes the changelog records after the outputs, and marks the records done after
   both (engine.md: outputs before state, state before the commit);
4. the partition is still held by this worker in the current generation: a closed lane
   (revoked) is never committed, and the broker refuses the commit of a member whose
   generation has moved on (`Fenced`: a zombie's commits fail).

A successful commit also confirms this worker's group membership as of that moment:
`confirm_membership` is what a worker asks before it starts an Xledger mutation, so a
worker stalled past its session timeout (a zombie) posts nothing (engine.md, "Zombies").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from worker import logs
from worker.engine.backend import Fenced, GroupConsumer
from worker.engine.offsets import Lane

log = logs.get("worker.engine")


class CommitPoint:
    def __init__(
        self,
        consumer: GroupConsumer,
        *,
        timeout_s: float,
        membership_window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.timeout_s = timeout_s  # a commit the broker does not answer in time has failed
        self.membership_window_s = membership_window_s
        self.clock = clock
        self._lock = asyncio.Lock()  # one commit at a time: never an older offset after a newer
        self.confirmed_at: float | None = None  # when a commit last succeeded

    async def commit(self, lanes: Iterable[Lane], force: bool = False) -> bool:
        """Commit what the rule above allows; True when the broker took it (or there was
        nothing to commit and `force` is off). With `force`, commit even an unchanged
        offset: that confirms membership."""
        async with self._lock:
            held = [lane for lane in lanes if not lane.closed]
            offsets = {}
            for lane in held:
                upto = lane.committable()
                if upto > lane.committed or force:
                    offsets[lane.tp] = max(upto, lane.committed)
            if not offsets:
                return True
            # The broker vouches for membership somewhere between sending and answering:
            # the confirmation counts from the sending, never later (engine.md, Zombies).
            sent = self.clock()
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.consumer.commit(offsets)
            except Fenced as exc:
                log.warning("commit_fenced", partitions=len(offsets), error=str(exc))
                self.confirmed_at = None
                return False
            except Exception as exc:  # the broker is unreachable or slow: try next time
                log.warning("commit_failed", partitions=len(offsets), error=repr(exc))
                return False
            self.confirmed_at = sent
            by_tp = {lane.tp: lane for lane in held}
            for tp, offset in offsets.items():
                by_tp[tp].committed_to(offset)
            return True

    async def confirm_membership(self, lanes: Iterable[Lane]) -> bool:
        """True when this worker's membership was confirmed within the window, else after
        a commit confirms it now. False: not confirmed (fenced, or the broker did not
        answer): start nothing that another worker may also start."""
        confirmed = self.confirmed_at
        if confirmed is not None and self.clock() - confirmed < self.membership_window_s:
            return True
        return await self.commit(lanes, force=True)
