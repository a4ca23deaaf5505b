"""One tenant's posting loop: gather a burst, post it, record every outcome.

A batch is gathered for the window from its first payment's arrival (longer while the
payments come from a backlog), sent at once when it fills a mutation, but never before the
tenant's request budget has room for it. Before posting, R18: a
submission decided under other Xledger settings than the ones in force is evaluated
again. Then the client posts (looking up before it posts; `fence` asked immediately
before each mutation: the partition is still ours and our group membership confirmed),
and every outcome goes to the broker before its records are done:
- posted (or already in Xledger): a receipt;
- refused by Xledger (R14): a rejection `XLEDGER_REFUSED`, and the payment sent back to
  the holder of its state (`RefusedPayment`) to wait for a newer snapshot (R16);
- failed after retries: a dead letter;
- held (the tenant's token is missing or refused): no outcome; the loop pauses until the
  token changes, then posts them again;
- abandoned (the fence said no): no outcome; the partition's next holder posts them.

About 410 lines: one tenant's loop from gathering to outcomes written, in the order it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from worker import logs, metrics
from worker.contracts import DlqReason, Rejection, Submission
from worker.contracts.headers import BACKLOG, FRESH, REPLAY_COUNT, SOURCE
from worker.contracts.reading import describe
from worker.core import Enriched, evaluate
from worker.core.messages import xledger_refused
from worker.core.outcome import Rejected
from worker.core.posting import settings_changed
from worker.core.register_index import RegisterIndex
from worker.engine.delivery import DeliveryAbandoned
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange
from worker.pipeline.outputs import (
    RefusedPayment,
    parse_position,
    refused_output,
    rejection_output,
)
from worker.pipeline.payment_state import store_key
from worker.pipeline.topics import STARTED, refused_topic
from worker.xledger.client import HoldReason, PostResult, Target
from worker.xledger.wire import MAX_PAYMENTS_PER_REQUEST

if TYPE_CHECKING:
    from worker.pipeline.post_stage import PostStage

log = logs.get("worker.pipeline")

Item = tuple[Submission, Record]
UNRESOLVED_RETRY_S = 10.0  # held with an unknown outcome: posted again (lookup first) after


class TenantPoster:
    def __init__(self, stage: PostStage, tenant: str, lane: Lane) -> None:
        self.stage = stage
        self.tenant = tenant
        self.lane = lane
        # Each with when it arrived (monotonic): the window counts from the first's arrival.
        self.queue: asyncio.Queue[tuple[Record, float]] = asyncio.Queue()
        # A mutation may be on its way to Xledger: from the first fence that said yes in a
        # call until its outcomes are written. Before that, the call may be stopped at
        # once (it waits for the budget, or looks up): nothing is lost.
        self.sending = False
        self._starting: list[StateChange] = []  # notes the next fence writes
        self.task = asyncio.create_task(self._run(), name=f"poster-{tenant}")

    async def stop(self, deadline: float) -> None:
        """Hand-over: a mutation on its way finishes and its outcomes are written (by
        `deadline`); nothing new starts."""
        if self.sending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while self.sending:
                        await asyncio.sleep(0.02)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    async def _run(self) -> None:
        try:
            while self.lane.open:
                batch = await self._gather()
                await self._takeover_wait()
                if not self.lane.open:
                    return
                await self._post(batch)
        except DeliveryAbandoned as exc:
            log.warning("post_stopped_before_writing", tenant_id=self.tenant, error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not knowing what was posted, dead-lettering could put a posted payment in
            # the DLQ: stop the worker instead; a restart reads them again and looks up.
            log.exception("post_stage_failed", tenant_id=self.tenant, error=repr(exc))
            self.stage.ctx.fail(exc)

    def put(self, record: Record) -> None:
        self.queue.put_nowait((record, time.monotonic()))

    async def _gather(self) -> list[Item]:
        """The next batch: the tenant's payments gathered for the window from the first
        one's arrival (fewer requests; the window bounds the wait, including a wait behind
        the batch before it), or for the longer backlog window while they come from a
        backlog (a burst: more are on their way; the first payment made after the backlog
        ends closes the batch). Sent at once when they fill a mutation (250 payments), but
        never before the tenant's request budget has room (waiting for the limit with half
        a batch would only cost more requests later)."""
        s = self.stage.s
        queue = self.queue
        record, arrived = await queue.get()
        batch = [record]
        start = time.monotonic()
        index = self.stage.book.index(self.tenant)
        hold = self.stage.client.ready_in(index.settings.token_ref) if index else 0.0
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
        return self._read(batch)

    def _read(self, records: list[Record]) -> list[Item]:
        """The batch's submissions, read now (they waited as bytes). One that is not a
        submission is dead-lettered; one keyed for another tenant goes to its poster."""
        items: list[Item] = []
        for record in records:
            try:
                sub = Submission.model_validate_json(record.value or b"")
            except ValidationError as exc:
                self.stage.stray(self.lane, record, describe(exc))
                continue
            if sub.tenant_id != self.tenant:
                self.stage.route(sub.tenant_id, self.lane, record)
                continue
            items.append((sub, record))
        return items

    async def _takeover_wait(self) -> None:
        """After an unclean hand-over, a request of the last holder may still be in flight:
        its first lookup here waits until that request's deadline has passed."""
        wait = self.stage.ready_at.get(self.lane.id, 0.0) - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _fence(self) -> bool:
        """Asked by the client immediately before it sends a mutation: the partition is
        still ours, our membership is confirmed, and the mutation's start is noted."""
        if not await self.stage.ctx.confirm(self.lane):
            return False
        # One write: when this mutation begins (the hand-over note), and that posting the
        # batch's payments began (a duplicate of one is looked up, never posted twice).
        await self.stage.mutation_starts(self.lane, self._starting)
        self._starting = []
        self.sending = self.lane.open
        return self.sending

    async def _post(self, items: list[Item]) -> None:
        stage = self.stage
        while items and self.lane.open:
            index = stage.book.index(self.tenant)
            if index is None:  # (the cache has caught up: only a snapshot topic wiped)
                await self._wait_for_snapshot()
                continue
            items = await self._evaluate_again_if_settings_changed(items, index)
            if not items:
                return
            settings = index.settings
            target = Target(self.tenant, settings.url, settings.token_ref, index.test_tenant)
            fresh, self._starting = self._fresh_of(items)
            try:
                subs = [sub for sub, _ in items]
                result = await stage.client.post(target, subs, self._fence, fresh)
                await self._record(items, result)
            finally:
                self.sending = False
            if result.held:
                held = {id(sub) for sub in result.held}
                items = [item for item in items if id(item[0]) in held]
                if result.held_reason is HoldReason.TOKEN:
                    await self._pause_for_token(target.token_ref, result.held_why)
                else:  # outcome unknown, Xledger not answering lookups: later, lookup first
                    log.warning(
                        "xledger_outcome_unresolved_retry",
                        tenant_id=self.tenant,
                        payments=len(items),
                        retry_in_s=UNRESOLVED_RETRY_S,
                    )
                    await asyncio.sleep(UNRESOLVED_RETRY_S)
            elif result.abandoned and self.lane.open:
                # Membership could not be confirmed (the broker did not answer): try again.
                abandoned = {id(sub) for sub in result.abandoned}
                items = [item for item in items if id(item[0]) in abandoned]
                await asyncio.sleep(1.0)
            else:
                return

    def _fresh_of(self, items: list[Item]) -> tuple[set[str], list[StateChange]]:
        """The payments nobody began to post before: the enrich stage's first submission
        of the payment (`flyt.fresh`, not a replay), with no note that posting it began.
        Their first mutation needs no lookup (one request per batch, not two; issue 20);
        every other payment is looked up first. And the notes that posting these begins,
        written (by the fence) before any mutation can leave."""
        stage, p = self.stage, self.lane.tp.partition
        started = stage.ctx.store(STARTED, p)
        now = time.time()
        fresh: set[str] = set()
        notes = []
        for sub, record in items:
            key = store_key((self.tenant, sub.payment_id))
            if (
                record.header(FRESH) is not None
                and record.header(REPLAY_COUNT) is None
                and started.get(key) is None
            ):
                fresh.add(sub.payment_id)
            notes.append(StateChange(STARTED, p, key, now))
        stage.forget_old_starts(p, now)
        return fresh, notes

    async def _evaluate_again_if_settings_changed(
        self, items: list[Item], index: RegisterIndex
    ) -> list[Item]:
        """R18 (decided): a voucher decided under another URL, Motkonto or Bankkonti-pkey
        than the snapshot in force is evaluated again against it before it is posted."""
        keep: list[Item] = []
        outputs: list[Output] = []
        finished: list[Record] = []
        now = datetime.now(UTC)
        for sub, record in items:
            if not settings_changed(sub.lines, sub.xledger_url, index.settings):
                keep.append((sub, record))
                continue
            log.info(
                "submission_evaluated_again",
                tenant_id=self.tenant,
                payment_id=sub.payment_id,
                evaluated_with=sub.snapshot_version,
                in_force=index.version,
                why="the snapshot in force has another Xledger URL, Motkonto or Bankkonti-pkey",
            )
            if sub.event is None:  # (older submissions carry no event to evaluate)
                outputs.append(
                    self.stage.dead_letter(
                        record,
                        DlqReason.SNAPSHOT_CHANGED,
                        "SnapshotChanged",
                        f"the tenant's Xledger settings changed (v{index.version}) since this "
                        f"payment was evaluated (v{sub.snapshot_version}), and the submission "
                        "does not carry its Betalt event: resend it (rejections resend)",
                    )
                )
                finished.append(record)
                continue
            result = evaluate(sub.event, index)
            if isinstance(result, Enriched):
                # Written as a new submission (the record of what is posted), which this
                # loop posts when it comes round; this one ends here.
                value = result.submission_json(sub.event, sub.event.model_dump_json().encode(), now)
                outputs.append(
                    Output(
                        self.stage.s.topics.submissions,
                        self.tenant.encode(),
                        value,
                        [(SOURCE, record.header(SOURCE) or b"")],
                        source=record,
                    )
                )
            else:
                rejection = result.rejection(sub, now)
                outputs += self._rejected(sub, record, rejection)
            finished.append(record)
        if outputs:
            await self.stage.ctx.write(outputs, (), [(self.lane, r) for r in finished])
        return keep

    async def _record(self, items: list[Item], result: PostResult) -> None:
        """Put the outcomes of one post on the broker; their records are then done."""
        stage = self.stage
        topics = stage.s.topics
        by_sub = {id(sub): record for sub, record in items}
        by_payment: dict[str, list[Record]] = defaultdict(list)
        for sub, record in items:
            by_payment[sub.payment_id].append(record)
        outputs: list[Output] = []
        finished: set[str] = set()
        now = datetime.now(UTC)
        for receipt in result.receipts:
            source = by_payment[receipt.payment_id][0]
            outputs.append(
                Output(
                    topics.receipts,
                    self.tenant.encode(),
                    receipt.model_dump_json().encode(),
                    source=source,
                )
            )
            finished.add(receipt.payment_id)
        for sub, message in result.refused:
            record = by_sub.get(id(sub)) or by_payment[sub.payment_id][0]
            rejection = Rejected(sub.snapshot_version, (xledger_refused(message),)).rejection(
                sub, now
            )
            outputs += self._rejected(sub, record, rejection)
            finished.add(sub.payment_id)
        for sub, code, message in result.failed:
            record = by_sub.get(id(sub)) or by_payment[sub.payment_id][0]
            outputs.append(
                stage.dead_letter(
                    record,
                    DlqReason.for_xledger(code),
                    f"Xledger {code}",
                    message,
                    attempts=stage.client.s.max_attempts,
                )
            )
            finished.add(sub.payment_id)
        done = [(self.lane, r) for pid in finished for r in by_payment[pid]]
        await stage.ctx.write(outputs, (), done)
        created = {sub.payment_id: sub.created_at for sub, _ in items}
        acked = datetime.now(UTC)
        for receipt in result.receipts:
            # From the enrich stage reading the Betalt event to the receipt on the broker.
            seconds = (acked - created[receipt.payment_id]).total_seconds()
            metrics.BETALT_TO_RECEIPT_SECONDS.observe(seconds)
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

    def _rejected(self, sub: Submission, record: Record, rejection: Rejection) -> list[Output]:
        """A rejection for the Økonomi tab, and the payment sent back to the holder of its
        state to wait for a newer snapshot (R16); without its event or its source (older
        submissions) it cannot wait: re-sending it by hand (R13) is the way."""
        s = self.stage.s
        where = parse_position((record.header(SOURCE) or b"").decode())
        outputs = []
        if sub.event is not None and where is not None and rejection.retryable:
            _, partition, _ = where
            refused = RefusedPayment(
                tenant_id=sub.tenant_id,
                payment_id=sub.payment_id,
                snapshot_version=sub.snapshot_version,
                event=sub.event.model_dump_json(),
                source=(record.header(SOURCE) or b"").decode(),
            )
            outputs.append(refused_output(refused_topic(s), partition, refused, record))
        else:
            rejection = rejection.model_copy(update={"retryable": False})
        outputs.insert(0, rejection_output(s.topics.rejections, rejection, record))
        return outputs

    async def _wait_for_snapshot(self) -> None:
        log.error(
            "post_no_snapshot",
            tenant_id=self.tenant,
            action="publish a valid register snapshot for this tenant; its payments wait",
        )
        while self.lane.open and self.stage.book.index(self.tenant) is None:
            await asyncio.sleep(self.stage.s.token_recheck_s)

    async def _pause_for_token(self, token_ref: str, why: str) -> None:
        """The tenant's token is missing or refused: a fault of the tenant, not of its
        payments. Hold them (other tenants go on) until the token appears or changes,
        or the snapshot names another; try again anyway after `token_retry_s`."""
        s, client = self.stage.s, self.stage.client
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
                index = self.stage.book.index(self.tenant)
                ref = index.settings.token_ref if index else token_ref
                if ref != token_ref or client.token_fingerprint(ref) != failed_with:
                    break
        finally:
            metrics.XLEDGER_TENANT_PAUSED.labels(self.tenant, metrics.PAUSED_TOKEN).set(0)
        log.info("xledger_tenant_resumed", tenant_id=self.tenant, reason=metrics.PAUSED_TOKEN)
