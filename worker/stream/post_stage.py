"""The post stage: xledger.submissions.v1 → Xledger → receipts, rejections, dead letters.

One posting loop per tenant, so a slow or paused tenant never holds up another. A
submission is acknowledged once its outcome is on the broker, in its partition's offset
order (`OrderedAcks`): a payment is never committed before it is posted.

A payment whose content Xledger refuses gets one outcome (R14, decided): a rejection
`XLEDGER_REFUSED`, parked with its Betalt event (carried in the submission) for the
enrich stage's R16 re-evaluation, like any rejection a register change can cure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from worker import logs, metrics
from worker.config import Settings
from worker.contracts import DlqReason, Submission
from worker.contracts.reading import describe
from worker.core.messages import xledger_refused
from worker.core.outcome import Rejected
from worker.core.register_book import RegisterBook
from worker.stream.dead_letters import dead_letter
from worker.stream.delivery import Deliver, Output
from worker.stream.enrich_stage import REJECTED, PaymentStates, rejection_output
from worker.stream.ordered_acks import OrderedAcks, Ticket
from worker.xledger.client import PostResult, Target, XledgerClient

log = logs.get("worker.stream")

Crash = Callable[[BaseException], Awaitable[Any]]


class PostStage:
    def __init__(
        self,
        s: Settings,
        book: RegisterBook,
        client: XledgerClient,
        deliver: Deliver,
        crash: Crash,
        states: PaymentStates | None = None,
    ) -> None:
        self.s = s
        self.book = book
        self.client = client
        self.deliver = deliver
        self.crash = crash  # stops the worker: a restart resumes from committed offsets
        # Where refused payments wait for R16 (the enrich stage's tables); None in tests.
        self.states = states
        self._posters: dict[str, _TenantPoster] = {}

    async def run(self, events: AsyncIterable[Any], acks: OrderedAcks) -> None:
        """Dispatch each submission to its tenant's loop; `events` is a no-ack stream."""
        async for event in events:
            ticket = acks.track(event)
            try:
                sub = Submission.model_validate_json(event.value)
            except ValidationError as exc:
                await self.deliver(
                    [
                        self.dead_letter(
                            event.message, DlqReason.INVALID, "ValidationError", describe(exc)
                        )
                    ]
                )
                await acks.finish(ticket)
                continue
            poster = self._posters.get(sub.tenant_id)
            if poster is None:
                poster = self._posters[sub.tenant_id] = _TenantPoster(self, sub.tenant_id, acks)
            poster.queue.put_nowait((sub, ticket))

    def dead_letter(
        self, message: Any, reason: DlqReason, error_class: str, error: str, attempts: int = 1
    ) -> Output:
        """This stage's DLQ record for an input message (the one policy: dead_letters.py)."""
        return dead_letter(
            self.s.topics.dlq,
            message,
            reason=reason,
            error_class=error_class,
            error=error,
            stage="post",
            attempts=attempts,
        )

    def stop(self) -> None:
        for poster in self._posters.values():
            poster.task.cancel()


Item = tuple[Submission, Ticket]


class _TenantPoster:
    """One tenant's posting loop."""

    def __init__(self, stage: PostStage, tenant: str, acks: OrderedAcks) -> None:
        self.stage = stage
        self.tenant = tenant
        self.acks = acks
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(), name=f"poster-{tenant}")

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            try:
                try:
                    await self._post(batch)
                except Exception as exc:  # one batch's failure must not stop the tenant
                    log.exception("post_batch_crashed", tenant_id=self.tenant, error=str(exc))
                    await self._dead_letter_all(
                        batch, DlqReason.CRASH, type(exc).__name__, str(exc)
                    )
            except Exception as exc:
                # Not even the DLQ takes it (the broker is gone): stop the worker rather
                # than stall this tenant; a restart resumes from the committed offsets.
                log.exception("post_stage_failed", tenant_id=self.tenant, error=str(exc))
                await self.stage.crash(exc)
                return
            for _, ticket in batch:
                await self.acks.finish(ticket)

    async def _gather(self) -> list[Item]:
        """The next batch: a burst gathered for up to the window, flushed at once when the
        stream goes quiet, but never before the tenant's request budget has room for it
        (waiting for the limit with half a batch would only cost more requests later)."""
        s = self.stage.s
        batch = [await self.queue.get()]
        start = time.monotonic()
        index = self.stage.book.index(self.tenant)
        hold = self.stage.client.ready_in(index.settings.token_ref) if index else 0.0
        earliest = start + hold
        deadline = start + max(s.post_batch_window_s, hold)
        while len(batch) < s.post_batch_max:
            now = time.monotonic()
            if now >= deadline:
                break
            # Before `earliest` wait for more; after it, only while items keep coming.
            timeout = earliest - now if now < earliest else min(0.02, deadline - now)
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), timeout))
            except TimeoutError:
                if time.monotonic() >= earliest:
                    break
        return batch

    async def _post(self, batch: list[Item]) -> None:
        stage = self.stage
        # A rebalance since these were read: their partition is read again, by whoever
        # owns it now (perhaps another worker, which looks them up and posts them).
        batch = [item for item in batch if not self.acks.stale(item[1])]
        by_payment = {sub.payment_id: ticket.event for sub, ticket in batch}
        subs = [sub for sub, _ in batch]
        tickets = [ticket for _, ticket in batch]

        def still_ours() -> bool:
            return not any(self.acks.stale(t) for t in tickets)

        while subs:
            index = stage.book.index(self.tenant)
            if index is None:
                left = {sub.payment_id for sub in subs}
                await self._dead_letter_all(
                    [item for item in batch if item[0].payment_id in left],
                    DlqReason.NO_SNAPSHOT,
                    "UnknownTenant",
                    f"no valid register snapshot for {self.tenant}",
                )
                return
            settings = index.settings
            target = Target(
                self.tenant, settings.url, settings.token_ref, index.snapshot.test_tenant
            )
            result = await stage.client.post(target, subs, fence=still_ours)
            await self._record(subs, result, by_payment)
            if result.held:
                await self._pause_for_token(target.token_ref, result.held_why)
            subs = result.held

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
            while time.monotonic() < give_up_at:
                await asyncio.sleep(s.token_recheck_s)
                index = self.stage.book.index(self.tenant)
                ref = index.settings.token_ref if index else token_ref
                if ref != token_ref or client.token_fingerprint(ref) != failed_with:
                    break
        finally:
            metrics.XLEDGER_TENANT_PAUSED.labels(self.tenant, metrics.PAUSED_TOKEN).set(0)
        log.info("xledger_tenant_resumed", tenant_id=self.tenant, reason=metrics.PAUSED_TOKEN)

    async def _record(
        self, subs: list[Submission], result: PostResult, by_payment: dict[str, Any]
    ) -> None:
        """Put the outcomes of one post on the broker (payments held get none yet)."""
        stage = self.stage
        topics = stage.s.topics
        outputs: list[Output] = []
        now = datetime.now(UTC)
        for receipt in result.receipts:
            outputs.append(
                Output(topics.receipts, self.tenant.encode(), receipt.model_dump_json().encode())
            )
        parked: list[tuple[Any, Submission]] = []
        for sub, message in result.refused:
            source = by_payment[sub.payment_id].message
            rejection = Rejected(sub.snapshot_version, (xledger_refused(message),)).rejection(
                sub, now
            )
            if sub.event is None or stage.states is None:
                # Nothing to evaluate again (a submission from before events were carried):
                # re-sending it by hand (R13) is the way.
                rejection = rejection.model_copy(update={"retryable": False})
            else:
                parked.append((source, sub))
            outputs.append(rejection_output(topics.rejections, rejection, source))
        for sub, code, message in result.failed:
            outputs.append(
                stage.dead_letter(
                    by_payment[sub.payment_id].message,
                    DlqReason.for_xledger(code),
                    f"Xledger {code}",
                    message,
                    attempts=stage.client.s.max_attempts,
                )
            )
        dead = await stage.deliver(outputs)
        for source, sub in parked:
            if id(source) in dead or stage.states is None or sub.event is None:
                continue
            key = (self.tenant, sub.payment_id)
            entry = {"event": sub.event.model_dump_json(), "version": sub.snapshot_version}
            stage.states.put(stage.states.pending, key, entry)
            stage.states.put(stage.states.handled, key, REJECTED)
        created = {sub.payment_id: sub.created_at for sub in subs}
        acked = datetime.now(UTC)
        for receipt in result.receipts:
            # From the enrich stage reading the Betalt event to the receipt on the broker.
            seconds = (acked - created[receipt.payment_id]).total_seconds()
            metrics.BETALT_TO_RECEIPT_SECONDS.observe(seconds)
        log.info(
            "batch_posted",
            tenant_id=self.tenant,
            payments=len(subs),
            receipts=len(result.receipts),
            refused=len(result.refused),
            failed=len(result.failed),
            held=len(result.held),
            abandoned=len(result.abandoned),
            requests=result.requests,
        )

    async def _dead_letter_all(
        self, batch: list[Item], reason: DlqReason, error_class: str, message: str
    ) -> None:
        await self.stage.deliver(
            [
                self.stage.dead_letter(ticket.event.message, reason, error_class, message)
                for _, ticket in batch
            ]
        )
