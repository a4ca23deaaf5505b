"""The post stage: xledger.submissions.v1 → Xledger → receipts, rejections, dead letters.

One posting loop per tenant per holding of a partition (`tenant_poster.py`), so a slow or
held tenant never holds up another; a tenant's submissions all sit in one partition (keyed
by tenant), and the engine commits a partition only past records whose outcome is on the
broker.

Hand-over (engine.md; `posting_lease.py`): on assign, the new holder reads the partition's
holder note and, when the last holder did not release it cleanly, waits the settle time
past the last holder's lease before its first lookup there. On revoke, each of the
partition's loops takes no new work, lets a mutation on its way finish (or reach the
request deadline) and writes its outcomes, and stops; the engine then commits. Only when
the commit went through and no loop had to cut a mutation or still holds payments whose
outcome is unknown is the partition noted `released`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from pydantic import ValidationError

from worker import logs
from worker.config import Settings
from worker.contracts import Submission, TenantPause
from worker.contracts.reading import describe
from worker.core.register_book import RegisterBook
from worker.engine.engine import StageContext
from worker.engine.key_loop import KeyLoops
from worker.engine.offsets import Lane
from worker.engine.records import Record
from worker.pipeline.dead_letters import invalid_submission
from worker.pipeline.poster_tools import PosterTools
from worker.pipeline.posting_lease import Lease, takeover_wait
from worker.pipeline.read_budget import ReadBudget
from worker.pipeline.tenant_control import TenantControl
from worker.pipeline.tenant_poster import TenantPoster
from worker.xledger.client import XledgerClient

log = logs.get("worker.pipeline")


class Arrivals:
    """What one lane received: when it last did (a burst is over when it is quiet), and
    how many records over the last second (a burst while the enrich stage keeps up)."""

    def __init__(self) -> None:
        self.last = 0.0
        self._recent: deque[tuple[float, int]] = deque()  # (when, how many), oldest first
        self._count = 0  # their sum

    def received(self, records: int, now: float) -> None:
        self.last = now
        self._recent.append((now, records))
        self._count += records

    def over_last_second(self, now: float) -> int:
        while self._recent and self._recent[0][0] < now - 1.0:
            self._count -= self._recent.popleft()[1]
        return self._count


def _tenant_of(record: Record) -> str | None:
    if not record.key:
        return None
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        return None


class PostStage:
    name = "post"

    def __init__(
        self,
        s: Settings,
        book: RegisterBook,
        client: XledgerClient,
        ctx: StageContext,
        control: TenantControl | None = None,
        reads: ReadBudget | None = None,
    ) -> None:
        self.s = s
        self.ctx = ctx
        self.topics: tuple[str, ...] = (s.topics.submissions,)
        self._pause_events: dict[str, asyncio.Event] = {}
        paused = control.paused if control is not None else lambda tenant: None
        if control is not None:
            control.listeners.append(self._pause_changed)
        self._arrivals: dict[int, Arrivals] = {}  # lane id → what it received, when
        self.tools = PosterTools(
            s,
            book,
            client,
            ctx,
            self.route,
            self.stray,
            {},
            self.quiet_for,
            self.arrivals_per_s,
            paused,
            self._pause_event,
            reads or ReadBudget(),
        )
        self._loops: KeyLoops[tuple[int, str], tuple[Record, float]] = KeyLoops(ctx.fail)
        self._posters: dict[tuple[int, str], TenantPoster] = {}
        self._leases: dict[int, Lease] = {}  # lane id → its lease
        self.ready_at: dict[int, float] = {}  # lane id → loop time its first lookup may go
        self._strays: dict[int, set[asyncio.Task[None]]] = {}  # lane id → dead letters on the way

    # --- the engine's side ---------------------------------------------------------------

    def submit(self, lane: Lane, records: list[Record]) -> None:
        """Each record to its tenant's loop, as bytes: a submission is read when its batch
        is formed, not while it waits (read, one takes ~4.9 KB; its bytes ~1.5 KB: at
        the month start tens of thousands wait). Its key is its tenant (contracts.md); one
        without a usable key is read here for its tenant."""
        self._arrivals.setdefault(lane.id, Arrivals()).received(len(records), time.monotonic())
        for record in records:
            tenant = _tenant_of(record)
            if tenant is None:
                try:
                    tenant = Submission.model_validate_json(record.value or b"").tenant_id
                except ValidationError as exc:
                    self.stray(lane, record, describe(exc))
                    continue
            self.route(tenant, lane, record)

    def route(self, tenant: str, lane: Lane, record: Record) -> None:
        """To the tenant's loop in this lane: one per tenant per holding of a partition."""
        key = (lane.id, tenant)
        loop = self._loops.get(key)
        if loop is None:
            lease = self._leases.get(lane.id)
            if lease is None:  # a lane not prepared: left undone, its next holder reads it
                log.warning("post_record_without_lane", partition=lane.tp.partition)
                return
            poster = self._posters[key] = TenantPoster(
                self.tools, lane, lease, self.ready_at.get(lane.id, 0.0), tenant
            )
            loop = self._loops.start(key, f"post-{tenant}-{lane.tp.partition}", poster.run)
        loop.put((record, time.monotonic()))

    async def assigned(self, lanes: list[Lane]) -> None:
        loop = asyncio.get_running_loop()
        for lane in lanes:
            lease = self._leases[lane.id] = Lease(self.ctx, lane)
            wait = takeover_wait(lease.found(), self.s.xledger_settle_s, time.time())
            self.ready_at[lane.id] = loop.time() + wait
            if wait:
                log.warning(
                    "post_takeover_wait",
                    partition=lane.tp.partition,
                    wait_s=round(wait, 1),
                    why="the last holder did not hand over cleanly: a mutation it began may "
                    "still be stored by Xledger until the settle time has passed",
                )
            await lease.take()

    async def revoked(self, lanes: list[Lane], deadline: float) -> bool:
        """Each loop of these lanes: a mutation on its way finishes and its outcomes are
        written (by `deadline`); nothing new starts. False (unclean) when one was cut, or
        holds payments whose outcome is unknown."""
        ids = {lane.id for lane in lanes}
        keys = [key for key in self._loops if key[0] in ids]
        calm = await self._loops.stop(keys, deadline)
        unsettled = False
        for key in keys:
            poster = self._posters.pop(key, None)
            if poster is not None:
                unsettled |= poster.unsettled
                poster.forget_held()
        strays = [task for i in ids for task in self._strays.pop(i, set()) if not task.done()]
        if strays:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*strays, return_exceptions=True)
        return calm and not unsettled

    async def handed_over(self, lanes: list[Lane], clean: bool) -> None:
        for lane in lanes:
            self.ready_at.pop(lane.id, None)
            self._arrivals.pop(lane.id, None)
            lease = self._leases.pop(lane.id, None)
            if clean and lease is not None:
                await lease.release()

    def quiet_for(self, lane: Lane) -> float:
        """Seconds since `lane` last received records."""
        arrivals = self._arrivals.get(lane.id)
        return time.monotonic() - (arrivals.last if arrivals is not None else 0.0)

    def arrivals_per_s(self, lane: Lane) -> int:
        """Records `lane` received over the last second."""
        arrivals = self._arrivals.get(lane.id)
        return arrivals.over_last_second(time.monotonic()) if arrivals is not None else 0

    # --- pauses by hand -------------------------------------------------------------------

    def _pause_event(self, tenant: str) -> asyncio.Event:
        return self._pause_events.setdefault(tenant, asyncio.Event())

    def _pause_changed(self, tenant: str, pause: TenantPause | None) -> None:
        """The control topic paused or resumed `tenant`: its loops look again at once."""
        self._pause_event(tenant).set()

    # --- records that are not submissions ------------------------------------------------

    def stray(self, lane: Lane, record: Record, error: str) -> None:
        """A record on the submissions topic that is not a submission: dead-lettered."""
        dead = invalid_submission(self.s.topics.dlq, record, error)

        async def write() -> None:
            await self.ctx.write([dead], (), [(lane, record)])

        task = asyncio.create_task(write())
        tasks = self._strays.setdefault(lane.id, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
