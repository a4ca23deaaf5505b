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
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from pydantic import ValidationError

from worker import logs, metrics
from worker.config import Settings
from worker.contracts import DlqReason, PaymentStatusEvent, Submission, TenantPause
from worker.contracts.headers import BACKLOG, FIRST_EVALUATION, SOURCE
from worker.contracts.reading import describe
from worker.core import evaluate
from worker.core.messages import xledger_refused
from worker.core.outcome import Rejected
from worker.core.posting import settings_changed
from worker.core.register_book import RegisterBook
from worker.core.register_index import RegisterIndex
from worker.engine.engine import StageContext
from worker.engine.key_loop import KeyLoop
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.decision import decided
from worker.pipeline.post_outcomes import (
    DEAD_LETTERED,
    POSTED,
    REJECTED,
    Outcome,
    PostOutcomes,
    answered,
    by_hand,
)
from worker.pipeline.posting_lease import Lease
from worker.pipeline.topics import OUTCOMES
from worker.xledger.client import HoldReason, PostResult, Target, XledgerClient
from worker.xledger.errors import LookupFailed
from worker.xledger.wire import MAX_PAYMENTS_PER_REQUEST

log = logs.get("worker.pipeline")

PRUNE_EVERY_S = 3600.0  # outcomes whose submissions are gone leave at most this often
# A payment whose mutation got no answer within the deadline this often, each time found
# absent after the settle time, is not sent again: its next lookup decides (found: its
# receipt; absent: a dead letter, sent again by hand). An Xledger that never answers in
# time (or refuses a payment only after the deadline) must not be asked for ever.
UNKNOWN_LIMIT = 3


class Item(NamedTuple):
    """A submission, read, with the record it came in and the Betalt event it carries."""

    sub: Submission
    record: Record
    event: PaymentStatusEvent


@dataclass(frozen=True)
class PosterTools:
    """What a tenant's posting loop needs, given by the post stage."""

    s: Settings
    book: RegisterBook
    client: XledgerClient
    ctx: StageContext
    # A record keyed for another tenant goes to that tenant's loop in the same lane.
    route: Callable[[str, Lane, Record], None]
    # A record that is no submission: dead-lettered (by the stage, in the lane's order).
    stray: Callable[[Lane, Record, str], None]
    # When the outcomes of a partition were last pruned (partition → monotonic time).
    pruned: dict[int, float]
    # The tenant's pause by hand, if any (`tenant_control.py`); and an event set when a
    # tenant's pause changes (its loop looks again).
    paused: Callable[[str], TenantPause | None]
    pause_changed: Callable[[str], asyncio.Event]


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
        # Held aside with no outcome yet: (items, not before (monotonic), outcome unknown).
        self.held: list[tuple[list[Item], float, bool]] = []
        self.unknowns: dict[str, int] = {}  # payment → mutations of it with unknown outcome

    @property
    def unsettled(self) -> bool:
        """Holds payments sent with an unknown outcome: a hand-over now is unclean (the
        next holder waits the settle time before it looks them up)."""
        return any(unknown for _, _, unknown in self.held)

    async def run(self, loop: KeyLoop[tuple[Record, float]]) -> None:
        self.loop = loop
        while self.lane.open:
            records = await self._gather(loop)
            items = self._read(records) + self._due()
            await self._takeover_wait()
            if not self.lane.open:
                return
            items = await self._without_outcome(items)
            if items:
                await self._while_paused_by_hand()
                await self._post(items)

    # --- gathering -------------------------------------------------------------------------

    async def _gather(self, loop: KeyLoop[tuple[Record, float]]) -> list[Record]:
        """The next batch: the tenant's payments gathered for the window from the first
        one's arrival (fewer requests; the window bounds the wait, including a wait behind
        the batch before it), or for the longer backlog window while they come from a
        backlog (a burst: more are on their way; the first payment made after the backlog
        ends closes the batch). Sent at once when they fill a mutation (250 payments), but
        never before the tenant's request budget has room (waiting for the limit with half
        a batch would only cost more requests later). Empty when held payments are due."""
        s = self.t.s
        queue = loop.queue
        try:
            record, arrived = await asyncio.wait_for(queue.get(), self._next_due_in())
        except TimeoutError:
            return []
        batch = [record]
        start = time.monotonic()
        index = self.t.book.index(self.tenant)
        hold = self.t.client.ready_in(index.settings.token_ref) if index else 0.0
        usual = max(arrived + s.post_batch_window_s, start + hold)
        longer = max(arrived + s.post_backlog_window_s, usual)
        while len(batch) < s.post_batch_max:
            while not queue.empty() and len(batch) < s.post_batch_max:
                record, _ = queue.get_nowait()  # what is there already, cheaply
                batch.append(record)
            now = time.monotonic()
            deadline = longer if record.header(BACKLOG) is not None else usual
            if now >= deadline or (len(batch) >= MAX_PAYMENTS_PER_REQUEST and now >= start + hold):
                break
            try:
                record, _ = await asyncio.wait_for(queue.get(), deadline - now)
            except TimeoutError:
                break
            batch.append(record)
        return batch

    def _read(self, records: list[Record]) -> list[Item]:
        """The batch's submissions, read now (they waited as bytes). One that is not a
        submission of this worker's (with its Betalt event and Xledger URL) is
        dead-lettered; one keyed for another tenant goes to its loop."""
        items: list[Item] = []
        for record in records:
            try:
                sub = Submission.model_validate_json(record.value or b"")
            except ValidationError as exc:
                self.t.stray(self.lane, record, describe(exc))
                continue
            if sub.event is None or sub.xledger_url is None:
                why = "a submission must carry its Betalt event and its Xledger URL"
                self.t.stray(self.lane, record, why)
                continue
            if sub.tenant_id != self.tenant:
                self.t.route(sub.tenant_id, self.lane, record)
                continue
            items.append(Item(sub, record, sub.event))
        return items

    def _hold(self, items: list[Item], not_before: float, unknown: bool) -> None:
        if items:
            self.held.append((items, not_before, unknown))
            metrics.POST_HELD.labels(self.tenant).inc(len(items))

    def forget_held(self) -> None:
        """The loop has stopped (a hand-over): what it held is read again by the next holder."""
        held = sum(len(items) for items, _, _ in self.held)
        if held:
            metrics.POST_HELD.labels(self.tenant).dec(held)
        self.held = []

    def _next_due_in(self) -> float | None:
        if not self.held:
            return None
        return max(0.0, min(at for _, at, _ in self.held) - self._now())

    def _due(self) -> list[Item]:
        now = self._now()
        due = [entry for entry in self.held if entry[1] <= now]
        self.held = [entry for entry in self.held if entry[1] > now]
        items = [item for batch, _, _ in due for item in batch]
        if items:
            metrics.POST_HELD.labels(self.tenant).dec(len(items))
        return items

    def _now(self) -> float:
        return self.t.client.clock()

    async def _takeover_wait(self) -> None:
        """After an unclean hand-over, a mutation of the last holder may still be stored
        by Xledger: the first lookup here waits until its settle time has passed."""
        wait = self.ready_at - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    # --- 1. an outcome for ever --------------------------------------------------------

    def _outcomes(self) -> PostOutcomes:
        return PostOutcomes(self.t.ctx.store(OUTCOMES, self.lane.tp.partition))

    async def _without_outcome(self, items: list[Item]) -> list[Item]:
        """R14: a payment with an outcome gets no other; its record, read again, is done."""
        outcomes = self._outcomes()
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

    async def _post(self, items: list[Item]) -> None:
        t = self.t
        while items and self.lane.open:
            index = t.book.index(self.tenant)
            if index is None:  # (the cache has caught up: only a snapshot topic wiped)
                await self._wait_for_snapshot()
                continue
            items = await self._evaluate_again_if_settings_changed(items, index)
            settings = index.settings
            target = Target(self.tenant, settings.url, settings.token_ref, index.test_tenant)
            items = await self._without_more_tries(target, items)
            if not items:
                return
            first = {
                item.sub.payment_id
                for item in items
                if item.record.header(FIRST_EVALUATION) is not None and not by_hand(item.record)
            }
            try:
                result = await t.client.post(
                    target, [item.sub for item in items], self._fence, first
                )
                await self._record(items, result)
            finally:
                if self.loop is not None:
                    self.loop.end_critical()
            if result.held:
                items = self._after_hold(items, result)
                if items and result.held_reason is HoldReason.TOKEN:
                    await self._pause_for_token(target.token_ref, result.held_why)
                    continue
                return
            if result.abandoned and self.lane.open:
                # Membership could not be confirmed (the broker did not answer), or the
                # tenant was paused by hand meanwhile: try again (after the pause).
                abandoned = {id(sub) for sub in result.abandoned}
                items = [item for item in items if id(item.sub) in abandoned]
                await asyncio.sleep(1.0)
                await self._while_paused_by_hand()
                continue
            return

    def _after_hold(self, items: list[Item], result: PostResult) -> list[Item]:
        """Held payments: those whose outcome is unknown, or that Xledger could not be
        asked about, are set aside until `retry_at`; for the token, returned (to post
        again once it changes)."""
        held = {id(sub) for sub in result.held}
        kept = [item for item in items if id(item.sub) in held]
        unknown = [item for item in kept if item.sub.payment_id in result.unknown]
        for payment in {item.sub.payment_id for item in unknown}:
            self.unknowns[payment] = self.unknowns.get(payment, 0) + 1
        rest = [item for item in kept if item.sub.payment_id not in result.unknown]
        retry_at = result.retry_at if result.retry_at is not None else self._now()
        self._hold(unknown, retry_at, unknown=True)
        if result.held_reason is HoldReason.TOKEN:
            return rest
        self._hold(rest, retry_at, unknown=False)
        if kept:
            log.warning(
                "xledger_payments_held",
                tenant_id=self.tenant,
                payments=len(kept),
                unknown_outcome=len(unknown),
                retry_in_s=round(max(0.0, retry_at - self._now()), 1),
                why=result.held_why,
            )
        return []

    async def _without_more_tries(self, target: Target, items: list[Item]) -> list[Item]:
        """Payments whose mutations got no answer UNKNOWN_LIMIT times are looked up only:
        found, a receipt; absent (known, nothing sent since), a dead letter. The rest."""
        spent = [i for i in items if self.unknowns.get(i.sub.payment_id, 0) >= UNKNOWN_LIMIT]
        if not spent:
            return items
        try:
            found = await self.t.client.find(target, [item.sub for item in spent])
        except LookupFailed as exc:
            log.warning("xledger_lookup_failed", tenant_id=self.tenant, error=str(exc))
            self._hold(spent, self._now() + self.t.client.s.unresolved_retry_s, unknown=False)
        else:
            message = (
                f"Xledger gave no answer to a mutation of it within the request deadline "
                f"{UNKNOWN_LIMIT} times; each time, after the settle time, it was not in "
                "Xledger: send it again by hand (dlq replay) once Xledger answers in time"
            )
            found.failed = [(sub, "unknown_outcome", message) for sub in found.absent]
            await self._record(spent, found)
            for item in spent:
                self.unknowns.pop(item.sub.payment_id, None)
        ids = {id(item) for item in spent}
        return [item for item in items if id(item) not in ids]

    async def _evaluate_again_if_settings_changed(
        self, items: list[Item], index: RegisterIndex
    ) -> list[Item]:
        """R18 (decided): a voucher decided under another URL, Motkonto or Bankkonti-pkey
        than the snapshot in force is evaluated again against it before it is posted, but
        only once a lookup where it was decided for says Xledger lacks it: a payment posted
        just before a crash is in Xledger, and gets its receipt, not a second voucher or a
        rejection (R14, decided 12-06)."""
        changed = [
            i for i in items if settings_changed(i.sub.lines, i.sub.xledger_url, index.settings)
        ]
        if not changed:
            return items
        keep = [i for i in items if i not in changed]
        by_target: dict[Target, list[Item]] = defaultdict(list)
        for item in changed:
            sub = item.sub
            ref = sub.token_ref or index.settings.token_ref
            url = sub.xledger_url or index.settings.url
            by_target[Target(self.tenant, url, ref, index.test_tenant)].append(item)
        for target, group in by_target.items():
            try:
                found = await self.t.client.find(target, [item.sub for item in group])
            except LookupFailed as exc:
                log.warning("r18_lookup_failed", tenant_id=self.tenant, error=str(exc))
                self._hold(group, self._now() + self.t.client.s.unresolved_retry_s, unknown=False)
                continue
            await self._record(group, found)
            absent = {id(sub) for sub in found.absent}
            await self._evaluate_again(index, [i for i in group if id(i.sub) in absent])
        return keep

    async def _evaluate_again(self, index: RegisterIndex, items: list[Item]) -> None:
        if not items:
            return
        outputs: list[Output] = []
        changes: list[StateChange] = []
        outcomes = self._outcomes()
        now = datetime.now(UTC)
        for item in items:
            sub, record = item.sub, item.record
            log.info(
                "submission_evaluated_again",
                tenant_id=self.tenant,
                payment_id=sub.payment_id,
                evaluated_with=sub.snapshot_version,
                in_force=index.version,
                why="the snapshot in force has another Xledger URL, Motkonto or Bankkonti-pkey, "
                "and Xledger lacks the payment where it was evaluated for",
            )
            result = evaluate(item.event, index)
            written = decided(
                self.t.s,
                result,
                item.event,
                item.event.model_dump_json().encode(),
                record,
                now,
                states=None,
                home=(record.header(SOURCE) or b"").decode() or None,
            )
            outputs += written.outputs
            if isinstance(result, Rejected):  # a new submission, if any, gets its own outcome
                changes.append(
                    outcomes.change(self.tenant, sub.payment_id, self._outcome(REJECTED, [record]))
                )
        await self.t.ctx.write(outputs, changes, [(self.lane, item.record) for item in items])

    # --- 4. outcomes ------------------------------------------------------------------------

    def _outcome(self, kind: str, records: list[Record]) -> Outcome:
        return Outcome(kind, max(r.offset for r in records), time.time())

    async def _record(self, items: list[Item], result: PostResult) -> None:
        """Put the outcomes of one post on the broker, with each payment's outcome state;
        their records are then done."""
        t = self.t
        topics = t.s.topics
        by_payment: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_payment[item.sub.payment_id].append(item)
        outcomes = self._outcomes()
        outputs: list[Output] = []
        changes: list[StateChange] = []
        finished: list[Record] = []
        now = datetime.now(UTC)

        def answer(payment: str, kind: str) -> list[Record]:
            self.unknowns.pop(payment, None)
            records = [item.record for item in by_payment[payment]]
            finished.extend(records)
            changes.append(outcomes.change(self.tenant, payment, self._outcome(kind, records)))
            return records

        for receipt in dict((r.payment_id, r) for r in result.receipts).values():
            source = answer(receipt.payment_id, POSTED)[0]
            outputs.append(
                Output(
                    topics.receipts,
                    self.tenant.encode(),
                    receipt.model_dump_json().encode(),
                    source=source,
                )
            )
        for sub, message in dict((s.payment_id, (s, m)) for s, m in result.refused).values():
            item = by_payment[sub.payment_id][0]
            answer(sub.payment_id, REJECTED)
            refused = Rejected(sub.snapshot_version, (xledger_refused(message),))
            outputs += decided(
                t.s,
                refused,
                item.event,
                item.event.model_dump_json().encode(),
                item.record,
                now,
                states=None,
                home=(item.record.header(SOURCE) or b"").decode() or None,
            ).outputs
        for sub, code, message in dict(
            (s.payment_id, (s, c, m)) for s, c, m in result.failed
        ).values():
            record = answer(sub.payment_id, DEAD_LETTERED)[0]
            outputs.append(
                dead_letter(
                    topics.dlq,
                    record,
                    reason=DlqReason.for_xledger(code),
                    error_class=f"Xledger {code}",
                    error=message,
                    stage="post",
                    attempts=t.client.s.max_attempts,
                )
            )
        changes += self._expired(outcomes)
        await t.ctx.write(outputs, changes, [(self.lane, r) for r in finished])
        acked = datetime.now(UTC)
        for receipt in result.receipts:
            # From the enrich stage reading the Betalt event to the receipt on the broker.
            created = by_payment[receipt.payment_id][0].sub.created_at
            metrics.BETALT_TO_RECEIPT_SECONDS.observe((acked - created).total_seconds())
        log.info(
            "batch_posted",
            tenant_id=self.tenant,
            payments=len(items),
            receipts=len(result.receipts),
            refused=len(result.refused),
            failed=len(result.failed),
            held=len(result.held),
            abandoned=len(result.abandoned),
            requests=result.requests,
        )

    def _expired(self, outcomes: PostOutcomes) -> list[StateChange]:
        """Outcomes whose submissions the broker no longer has: at most once an hour."""
        now = time.monotonic()
        p = outcomes.partition
        if now - self.t.pruned.get(p, 0.0) < PRUNE_EVERY_S:
            return []
        self.t.pruned[p] = now
        return outcomes.expired(time.time(), self.t.s.retention_days * 86_400)

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
