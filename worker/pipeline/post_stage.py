"""The post stage: xledger.submissions.v1 → Xledger → receipts, rejections, dead letters.

One posting loop per tenant (`tenant_poster.py`), so a slow or paused tenant never holds
up another; a tenant's submissions all sit in one partition (keyed by tenant), so each
loop belongs to one holding of one partition (`Lane`), and the engine commits a
partition only past records whose outcome is on the broker.

Hand-over (engine.md): on revoke, each of the partition's loops takes no new work, lets
the Xledger call in hand finish or reach the request deadline, writes its outcomes, and
stops; the engine then commits. After a clean hand-over (the commit went through) the
partition's `posting` store notes `released`. Before each mutation the holder notes when
it started one (`mutation_at`, wall clock). A new holder that finds the note `held`
instead (the last holder died or was stalled) waits until one request deadline has
passed since that last mutation began, before it looks anything up there: a mutation of
the last holder may still be on its way to Xledger, and a lookup before it lands would
miss it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import ValidationError

from worker import logs
from worker.config import Settings
from worker.contracts import DlqReason, Submission
from worker.contracts.reading import describe
from worker.core.register_book import RegisterBook
from worker.engine.engine import Engine
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.tenant_poster import TenantPoster
from worker.pipeline.topics import POSTING, STARTED, STARTED_DAYS
from worker.xledger.client import XledgerClient

log = logs.get("worker.pipeline")


def _tenant_of(record: Record) -> str | None:
    if not record.key:
        return None
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        return None


HOLDER = "\x00holder"  # the posting store's note on who last held the partition
CLOCK_MARGIN_S = 1.0  # for the skew between two workers' wall clocks


class PostStage:
    name = "post"

    def __init__(self, s: Settings, book: RegisterBook, client: XledgerClient) -> None:
        self.s = s
        self.book = book
        self.client = client
        self.topics: tuple[str, ...] = (s.topics.submissions,)
        self.engine: Engine | None = None  # set when the engine is built
        self.posters: dict[str, TenantPoster] = {}
        self.ready_at: dict[int, float] = {}  # lane id → loop time its first lookup may go
        self._strays: set[asyncio.Task[None]] = set()
        self._forgot: dict[int, float] = {}  # partition → when old `started` notes were dropped

    @property
    def ctx(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the post stage is not attached to an engine")
        return self.engine

    # --- the engine's side ---------------------------------------------------------------

    def submit(self, lane: Lane, records: list[Record]) -> None:
        """Each record to its tenant's poster, as bytes: a submission is read when its
        batch is formed, not while it waits (parsed, one takes ~8.5 KB; its bytes ~1.3 KB:
        at the month start tens of thousands wait). Its key is its tenant (contracts.md);
        one without a usable key is read here for its tenant."""
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
        poster = self.posters.get(tenant)
        if poster is None or poster.lane is not lane:
            poster = self.posters[tenant] = TenantPoster(self, tenant, lane)
        poster.put(record)

    async def assigned(self, lanes: list[Lane]) -> None:
        loop = asyncio.get_running_loop()
        now = time.time()
        notes = []
        for lane in lanes:
            p = lane.tp.partition
            held = self.ctx.store(POSTING, p).get(HOLDER) or {}
            last = held.get("mutation_at") if held.get("state") == "held" else None
            wait = 0.0
            if last is not None:
                wait = max(0.0, last + self.s.xledger_request_deadline_s + CLOCK_MARGIN_S - now)
            self.ready_at[lane.id] = loop.time() + wait
            if wait:
                log.warning(
                    "post_takeover_wait",
                    partition=p,
                    wait_s=round(wait, 1),
                    why="the last holder did not hand over cleanly and began a mutation "
                    "less than one request deadline ago: it may still be on its way",
                )
            notes.append(self._note(p, "held", held.get("mutation_at")))
        await self.ctx.write([], notes)

    async def mutation_starts(self, lane: Lane, also: Sequence[StateChange] = ()) -> None:
        """Noted (on the broker) before a mutation is sent: see the module's docstring;
        `also`: other notes that must be on the broker before it leaves."""
        await self.ctx.write([], [self._note(lane.tp.partition, "held", time.time()), *also])

    def _note(self, partition: int, state: str, mutation_at: float | None) -> StateChange:
        note = {"state": state, "mutation_at": mutation_at, "at": datetime.now(UTC).isoformat()}
        return StateChange(POSTING, partition, HOLDER, note)

    async def revoked(self, lanes: list[Lane], deadline: float) -> None:
        ids = {lane.id for lane in lanes}
        leaving = [p for p in self.posters.values() if p.lane.id in ids]
        await asyncio.gather(*(p.stop(deadline) for p in leaving))
        for poster in leaving:
            if self.posters.get(poster.tenant) is poster:
                del self.posters[poster.tenant]
        strays = [t for t in self._strays if not t.done()]
        if strays:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*strays, return_exceptions=True)

    async def handed_over(self, lanes: list[Lane], clean: bool) -> None:
        for lane in lanes:
            self.ready_at.pop(lane.id, None)
        if clean:  # the commit went through: nothing of ours is in flight for these
            await self.ctx.write(
                [], [self._note(lane.tp.partition, "released", None) for lane in lanes]
            )

    def forget_old_starts(self, partition: int, now: float) -> None:
        """The `started` notes older than STARTED_DAYS leave memory (their changelog is
        deleted by age, so a restore does not bring them back): at most once an hour."""
        last = self._forgot.get(partition, 0.0)
        if now - last < 3600:
            return
        self._forgot[partition] = now
        store = self.ctx.store(STARTED, partition)
        store.forget([k for k, at in store.items() if now - at > STARTED_DAYS * 86_400])

    def stop(self) -> None:
        for poster in self.posters.values():
            poster.task.cancel()

    # --- records that are not submissions ------------------------------------------------

    def stray(self, lane: Lane, record: Record, error: str) -> None:
        """A record on the submissions topic that is not a submission: dead-lettered."""
        dead = self.dead_letter(record, DlqReason.INVALID, "ValidationError", error)

        async def write() -> None:
            await self.ctx.write([dead], (), [(lane, record)])

        task = asyncio.create_task(write())
        self._strays.add(task)
        task.add_done_callback(self._strays.discard)

    def dead_letter(
        self, record: Record, reason: DlqReason, error_class: str, error: str, attempts: int = 1
    ) -> Output:
        """This stage's DLQ record for an input record (the one policy: dead_letters.py)."""
        return dead_letter(
            self.s.topics.dlq,
            record,
            reason=reason,
            error_class=error_class,
            error=error,
            stage="post",
            attempts=attempts,
        )
