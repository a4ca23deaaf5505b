"""One tenant's posting loop within one holding of a partition: gather a burst, post it,
record every outcome.

A batch is gathered for the window from its first payment's arrival (longer while the
payments come from a backlog), sent at once when it fills a mutation, but never before the
tenant's request budget has room for it. Then, in order:
1. a payment that already has its outcome (`post_outcomes.py`: read again after a crash or
   a hand-over) gets no other;
2. R18: a submission decided under other Xledger settings than the ones in force is looked
   up where it was evaluated for, and evaluated again only when Xledger lacks it there;
3. the client looks every payment up and posts what Xledger lacks (R14, decided 12-06),
   asking the fence (`posting_lease.py`) right before each mutation leaves;
4. every outcome goes to the broker, with the payment's outcome state, before its records
   are done:
   - posted (or already in Xledger): a receipt;
   - refused by Xledger (R14): a rejection `XLEDGER_REFUSED`, and the payment sent back to
     the holder of its state to wait for a newer snapshot (R16; `decision.py`);
   - failed after retries, and known absent from Xledger: a dead letter;
   - held: no outcome yet. The tenant's token is missing or refused: the loop pauses until
     it changes. A mutation's outcome is unknown, or Xledger cannot be asked: held aside
     (the tenant's other payments go on) and posted again, lookup first, after the settle
     time (or a short wait);
   - abandoned (the fence said no): no outcome; the partition's next holder posts them.

A tenant paused by hand (`worker tenant pause`, Økonomiinnstillinger) posts nothing: its
payments wait in the loop (never rejected or dead-lettered for the pause) and are posted,
lookup first, once it is resumed; the fence says no to a mutation of a paused tenant, so
no mutation begins after the pause is known.

From the fence's yes until its outcomes are written, a mutation may be on its way to
Xledger: that is the loop's critical step, which a hand-over lets finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from worker import logs, metrics
from worker.contracts import SubmissionToPost
from worker.contracts.headers import BACKLOG, FIRST_EVALUATION
from worker.contracts.reading import describe
from worker.engine.key_loop import KeyLoop
from worker.engine.offsets import Lane
from worker.engine.records import Record
from worker.pipeline.held_payments import UNKNOWN_LIMIT, HeldPayments
from worker.pipeline.post_outcomes import answered, by_hand
from worker.pipeline.post_results import ResultWriter
from worker.pipeline.poster_tools import Item, PosterTools
from worker.pipeline.posting_lease import Lease
from worker.pipeline.settings_changed import unless_settings_changed
from worker.xledger.client import HoldReason, PostResult, Target
from worker.xledger.errors import LookupFailed
from worker.xledger.wire import MAX_PAYMENTS_PER_REQUEST

log = logs.get("worker.pipeline")

Wait = Callable[[], Awaitable[None]]

# A partition that has had no new submission for this long is past its burst: a backlog
# batch need not wait for more.
BURST_OVER_S = 0.5
# A partition receiving at least this many submissions a second is in a burst, whether
# its submissions say they were made from a backlog or not (an enrich stage that keeps up
# with a burst makes them as they come: the month start's 50,000 at once then cost 4
# requests a tenant, not 2): its batches are gathered as a backlog's. The quick bench's
# steady load is 125 a second a partition.
BURST_RATE = 500
# A backlog batch: two mutations' worth share one lookup. Not more: a batch is read
# (~4.9 KB a submission; ~8.5 KB then) while it is posted, and 16 calls at once with
# 1,000 each held 606 MB at the month start's 50,000 over 20 tenants (Apache Kafka).
BACKLOG_BATCH = 2 * MAX_PAYMENTS_PER_REQUEST


class TenantPoster:
    def __init__(
        self, tools: PosterTools, lane: Lane, lease: Lease, ready_at: float, tenant: str
    ) -> None:
        self.t = tools
        self.lane = lane
        self.lease = lease
        self.ready_at = ready_at  # loop time the first lookup may go (the takeover wait)
        self.tenant = tenant
        self.loop: KeyLoop[tuple[Record, float]] | None = None
        self.held = HeldPayments(tenant, tools.client.clock)
        self.results = ResultWriter(tools, lane, tenant)

    @property
    def unsettled(self) -> bool:
        """Holds payments sent with an unknown outcome: a hand-over now is unclean."""
        return self.held.unsettled

    def forget_held(self) -> None:
        self.held.forget()

    async def run(self, loop: KeyLoop[tuple[Record, float]]) -> None:
        self.loop = loop
        again: list[Item] = []  # to post once a wait is over (the token, a snapshot)
        while self.lane.open:
            records = [] if again else await self._gather(loop)
            await self._takeover_wait()
            await self._while_paused_by_hand()
            # The batch's share of the read budget, then one of the few places to talk to
            # Xledger: both taken before the batch is read (at the month start hundreds of
            # tenants wait, as bytes, not as read batches), and given back for any wait.
            async with self.t.reads.share(len(records) + len(again)), self.t.client.call():
                if not self.lane.open:
                    return
                again, wait = await self._round(records, again)
            del records  # a loop's last batch is not kept while it waits for the next one
            if wait is not None:
                await wait()

    async def _round(
        self, records: list[Record], again: list[Item]
    ) -> tuple[list[Item], Wait | None]:
        """One batch read and posted. Its read submissions live only here: kept by the
        loop while it gathered the next batch, 356 tenants' last batches held ~64 MB at the
        month start (tracemalloc)."""
        items = again or await self._without_outcome(self._read(records) + self.held.due())
        return await self._post(items) if items else ([], None)

    # --- gathering -------------------------------------------------------------------------

    async def _gather(self, loop: KeyLoop[tuple[Record, float]]) -> list[Record]:
        """The next batch: the tenant's payments gathered for the window from the first
        one's arrival (fewer requests; the window bounds the wait, including a wait behind
        the batch before it), or for the longer backlog window while they come from a
        backlog or in a burst (BURST_RATE: more are on their way). A backlog batch closes
        the usual window after the last payment made after the backlog (the burst's tail,
        made as the enrich stage catches up, joins it: otherwise one more lookup and
        mutation for most tenants), or when the partition has had nothing new for BURST_OVER_S (the
        burst is over: every tenant's batch of it is whole, one lookup and one mutation
        each), or at the longer window. A backlog batch takes up to BACKLOG_BATCH (two
        mutations for one lookup); any other is sent at once when it fills a mutation (250
        payments), but never before the tenant's request budget has room (waiting for the
        limit with half a batch would only cost more requests later). Empty when held
        payments are due."""
        s = self.t.s
        queue = loop.queue
        try:
            record, arrived = await asyncio.wait_for(queue.get(), self.held.next_due_in())
        except TimeoutError:
            return []
        batch = [record]
        start = time.monotonic()
        index = self.t.book.index(self.tenant)
        hold = self.t.client.ready_in(index.settings.token_ref) if index else 0.0
        usual = max(arrived + s.post_batch_window_s, start + hold)
        longer = max(arrived + s.post_backlog_window_s, usual)

        def in_burst() -> bool:
            return self.t.arrivals_per_s(self.lane) >= BURST_RATE

        def in_backlog(record: Record) -> bool:
            """Made from a backlog, or come in a burst."""
            return record.header(BACKLOG) is not None or in_burst()

        # The arrival of the batch's latest payment while it is one made after the backlog
        # (None while the latest comes from the backlog).
        fresh_at = None if in_backlog(record) else arrived
        from_backlog = fresh_at is None  # the batch has had a payment from a backlog

        def take(record: Record, at: float) -> None:
            nonlocal fresh_at, from_backlog
            batch.append(record)
            if in_backlog(record):
                fresh_at, from_backlog = None, True  # more are on their way
            else:
                fresh_at = at

        while len(batch) < s.post_batch_max:
            while not queue.empty() and len(batch) < s.post_batch_max:
                take(*queue.get_nowait())  # what is there already, cheaply
            now = time.monotonic()
            backlog = fresh_at is None
            deadline = usual
            if fresh_at is None:
                deadline = longer
            elif from_backlog:  # the burst's tail, for as long as the enrich stage catches up
                deadline = min(longer, max(usual, fresh_at + s.post_batch_window_s))
            # A full mutation goes at once, unless the batch is a backlog's (more are on
            # their way): then two share one lookup.
            full = len(batch) >= (BACKLOG_BATCH if from_backlog else MAX_PAYMENTS_PER_REQUEST)
            if now >= deadline and not from_backlog and not full and in_burst():
                # A burst's head: its first payments came before the partition's rate
                # showed the burst (2 runs in 15 at the month start: 83 tenants a batch of
                # 2-9 first). The burst shows now: gathered as a backlog's from here.
                fresh_at, from_backlog = None, True
                continue
            if now >= deadline or (full and now >= start + hold):
                break
            if backlog and self.t.quiet_for(self.lane) >= BURST_OVER_S:
                break
            wait = min(deadline - now, BURST_OVER_S) if backlog else deadline - now
            try:
                take(*await asyncio.wait_for(queue.get(), wait))
            except TimeoutError:
                continue  # the deadline, or a look at whether the burst is over
        return batch

    def _read(self, records: list[Record]) -> list[Item]:
        """The batch's submissions, read now (they waited as bytes), their Betalt events
        only for whose they are (`SubmissionToPost`: read in full on a refusal or for
        R18). One that is not a submission of this worker's (with its Betalt event, the
        same payment's, and its Xledger URL) is dead-lettered; one keyed for another
        tenant goes to its loop."""
        items: list[Item] = []
        for record in records:
            try:
                sub = SubmissionToPost.model_validate_json(record.value or b"")
            except ValidationError as exc:
                self.t.stray(self.lane, record, describe(exc))
                continue
            if sub.event is None or sub.xledger_url is None:
                why = "a submission must carry its Betalt event and its Xledger URL"
                self.t.stray(self.lane, record, why)
                continue
            if (sub.event.tenant_id, sub.event.payment_id) != (sub.tenant_id, sub.payment_id):
                self.t.stray(self.lane, record, "its Betalt event is another payment's")
                continue
            if sub.tenant_id != self.tenant:
                self.t.route(sub.tenant_id, self.lane, record)
                continue
            items.append(Item(sub, record))
        return items

    async def _takeover_wait(self) -> None:
        """After an unclean hand-over, a mutation of the last holder may still be stored
        by Xledger: the first lookup here waits until its settle time has passed."""
        wait = self.ready_at - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    # --- 1. an outcome for ever --------------------------------------------------------

    async def _without_outcome(self, items: list[Item]) -> list[Item]:
        """R14: a payment with an outcome gets no other; its record, read again, is done."""
        outcomes = self.results.outcomes()
        settled = [
            item
            for item in items
            if answered(outcomes.get(self.tenant, item.sub.payment_id), item.record)
        ]
        if not settled:
            return items
        log.info(
            "submissions_already_answered",
            tenant_id=self.tenant,
            payments=len(settled),
            why="read again (a crash or a hand-over): their outcome stands",
        )
        await self.t.ctx.write([], (), [(self.lane, item.record) for item in settled])
        ids = {id(item) for item in settled}
        return [item for item in items if id(item) not in ids]

    # --- 2 and 3: R18, then the client ---------------------------------------------------

    async def _fence(self) -> bool:
        """Asked by the client right before a mutation leaves (`Lease.fence`). From its
        yes until the outcomes are written, a hand-over lets this step finish."""
        if self.t.paused(self.tenant) is not None:  # paused by hand meanwhile: not now
            return False
        if not await self.lease.fence():
            return False
        assert self.loop is not None
        self.loop.begin_critical()
        return True

    async def _post(self, items: list[Item]) -> tuple[list[Item], Wait | None]:
        """Post a batch and write its results; returns what is to be posted again after a
        wait, and the wait (the loop waits without its place to talk to Xledger)."""
        t = self.t
        if items and self.lane.open:
            index = t.book.index(self.tenant)
            if index is None:  # (the cache has caught up: only a snapshot topic wiped)
                return items, self._wait_for_snapshot
            items = await unless_settings_changed(items, index, self.results, self.held)
            settings = index.settings
            target = Target(self.tenant, settings.url, settings.token_ref, index.test_tenant)
            items = await self._without_more_tries(target, items)
            if not items:
                return [], None
            first = {
                item.sub.payment_id
                for item in items
                if item.record.header(FIRST_EVALUATION) is not None and not by_hand(item.record)
            }
            try:
                result = await t.client.post(
                    target, [item.sub for item in items], self._fence, first
                )
                self.held.answered(await self.results.write(items, result))
            finally:
                if self.loop is not None:
                    self.loop.end_critical()
            if result.held:
                items = self._after_hold(items, result)
                if items and result.held_reason is HoldReason.TOKEN:
                    ref, why = target.token_ref, result.held_why
                    return items, lambda: self._pause_for_token(ref, why)
                return [], None
            if result.abandoned and self.lane.open:
                # Membership could not be confirmed (the broker did not answer), or the
                # tenant was paused by hand meanwhile: try again (after the pause).
                abandoned = {id(sub) for sub in result.abandoned}
                items = [item for item in items if id(item.sub) in abandoned]
                return items, lambda: asyncio.sleep(1.0)
        return [], None

    def _after_hold(self, items: list[Item], result: PostResult) -> list[Item]:
        """Held payments: those whose outcome is unknown, or that Xledger could not be
        asked about, are set aside until `retry_at`; for the token, returned (to post
        again once it changes)."""
        held = {id(sub) for sub in result.held}
        kept = [item for item in items if id(item.sub) in held]
        unknown = [item for item in kept if item.sub.payment_id in result.unknown]
        rest = [item for item in kept if item.sub.payment_id not in result.unknown]
        retry_at = result.retry_at if result.retry_at is not None else self.held.clock()
        self.held.hold(unknown, retry_at, unknown=True)
        if result.held_reason is HoldReason.TOKEN:
            return rest
        self.held.hold(rest, retry_at, unknown=False)
        if kept:
            log.warning(
                "xledger_payments_held",
                tenant_id=self.tenant,
                payments=len(kept),
                unknown_outcome=len(unknown),
                retry_in_s=round(max(0.0, retry_at - self.held.clock()), 1),
                why=result.held_why,
            )
        return []

    async def _without_more_tries(self, target: Target, items: list[Item]) -> list[Item]:
        """Payments whose mutations got no answer UNKNOWN_LIMIT times are looked up only:
        found, a receipt; absent (known, nothing sent since), a dead letter. The rest."""
        spent = self.held.spent(items)
        if not spent:
            return items
        try:
            found = await self.t.client.find(target, [item.sub for item in spent])
        except LookupFailed as exc:
            log.warning("xledger_lookup_failed", tenant_id=self.tenant, error=str(exc))
            retry_at = self.held.clock() + self.t.client.s.unresolved_retry_s
            self.held.hold(spent, retry_at, unknown=False)
        else:
            message = (
                f"Xledger gave no answer to a mutation of it within the request deadline "
                f"{UNKNOWN_LIMIT} times; each time, after the settle time, it was not in "
                "Xledger: send it again by hand (dlq replay) once Xledger answers in time"
            )
            found.failed = [(sub, "unknown_outcome", message) for sub in found.absent]
            self.held.answered(await self.results.write(spent, found))
        ids = {id(item) for item in spent}
        return [item for item in items if id(item) not in ids]

    # --- waits ---------------------------------------------------------------------------

    async def _wait_for_snapshot(self) -> None:
        log.error(
            "post_no_snapshot",
            tenant_id=self.tenant,
            action="publish a valid register snapshot for this tenant; its payments wait",
        )
        while self.lane.open and self.t.book.index(self.tenant) is None:
            await asyncio.sleep(self.t.s.token_recheck_s)

    async def _while_paused_by_hand(self) -> None:
        """Paused by hand (`worker tenant pause`): wait, holding the payments, until it is
        resumed or the lane is handed over."""
        pause = self.t.paused(self.tenant)
        if pause is None:
            return
        log.warning(
            "post_held_paused_by_hand",
            tenant_id=self.tenant,
            partition=self.lane.tp.partition,
            paused_by=pause.by,
            reason=pause.reason,
            paused_at=pause.at.isoformat(),
            action="`worker tenant resume` posts them, each looked up first",
        )
        changed = self.t.pause_changed(self.tenant)
        while self.lane.open and self.t.paused(self.tenant) is not None:
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 5.0)
        log.info("post_resumed_by_hand", tenant_id=self.tenant, partition=self.lane.tp.partition)

    async def _pause_for_token(self, token_ref: str, why: str) -> None:
        """The tenant's token is missing or refused: a fault of the tenant, not of its
        payments. Hold them (other tenants go on) until the token appears or changes,
        or the snapshot names another; try again anyway after `token_retry_s`."""
        s, client = self.t.s, self.t.client
        failed_with = client.token_fingerprint(token_ref)
        metrics.XLEDGER_TENANT_PAUSED.labels(self.tenant, metrics.PAUSED_TOKEN).set(1)
        log.error(
            "xledger_tenant_paused",
            tenant_id=self.tenant,
            reason=metrics.PAUSED_TOKEN,
            error=why,  # names the token's reference and where it was looked for, never it
            action="put a valid token in place; posting resumes by itself",
        )
        give_up_at = time.monotonic() + s.token_retry_s
        try:
            while time.monotonic() < give_up_at and self.lane.open:
                await asyncio.sleep(s.token_recheck_s)
                index = self.t.book.index(self.tenant)
                ref = index.settings.token_ref if index else token_ref
                if ref != token_ref or client.token_fingerprint(ref) != failed_with:
                    break
        finally:
            metrics.XLEDGER_TENANT_PAUSED.labels(self.tenant, metrics.PAUSED_TOKEN).set(0)
        log.info("xledger_tenant_resumed", tenant_id=self.tenant, reason=metrics.PAUSED_TOKEN)
