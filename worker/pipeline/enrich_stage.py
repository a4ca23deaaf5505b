"""The enrich stage: flyt.payment-status.v1 → submissions, rejections, dead letters; and R16,
the re-evaluation of waiting rejections when a newer snapshot arrives (`reevaluation.py`).

Per batch: read each event (unreadable → DLQ), R17 intake (ignored, duplicate), evaluate
against the tenant's snapshot (the pure core), then write every output, then the
payments' state, then the records are done (`engine/writer.py`).

Work is per partition, in order: the records of the payment-status partition p, the
refused payments sent back to p (`RefusedPayment`: co-partitioned with it), and R16
passes over p's waiting rejections all run in one loop per partition (`KeyLoop`), so
that only one thing at a time reads and writes p's state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from worker import logs, metrics
from worker.config import Settings
from worker.contracts import DlqReason
from worker.contracts.headers import RESEND_BY
from worker.contracts.reading import Unreadable, describe, read_event
from worker.core import Enriched, evaluate
from worker.core.intake import Intake, intake
from worker.core.register_book import RegisterBook
from worker.engine.delivery import DeliveryAbandoned
from worker.engine.engine import StageContext
from worker.engine.key_loop import KeyLoop, KeyLoops
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.decision import decided
from worker.pipeline.outputs import Marks, RefusedPayment
from worker.pipeline.payment_state import (
    REJECTED,
    SUBMITTED,
    Key,
    PaymentStates,
    pending_entry,
)
from worker.pipeline.reevaluation import reevaluate
from worker.pipeline.topics import HANDLED, PENDING, refused_topic

log = logs.get("worker.pipeline")
_root_log = logging.getLogger("worker.pipeline")

_OUTCOMES = (SUBMITTED, REJECTED, "ignored", "duplicate")
CATCH_UP = "*"  # an R16 pass over every tenant with waiting rejections
TIMING_SAMPLE = 16  # one evaluation in this many is timed for flyt_enrich_seconds
# Records of the partition still to do after a batch, at which the stage is working off a
# backlog (a burst, a catch-up): its submissions say so (`flyt.backlog`). At 500 events/s
# over 4 partitions a partition is some tens of records behind at most.
BACKLOG_RECORDS = 200


Item = tuple[Any, ...]  # ("records", lane, records) or ("reevaluate", tenant)


class EnrichStage:
    name = "enrich"

    def __init__(self, s: Settings, book: RegisterBook, ctx: StageContext) -> None:
        self.s = s
        self.book = book
        self.ctx = ctx
        self.topics: tuple[str, ...] = (s.topics.payments, refused_topic(s))
        self._loops: KeyLoops[int, Item] = KeyLoops(ctx.fail)
        self._queued: dict[int, set[str]] = {}  # partition → tenants with an R16 pass queued
        self._evaluated = 0

    def states(self, partition: int) -> PaymentStates:
        return PaymentStates(
            partition, self.ctx.store(HANDLED, partition), self.ctx.store(PENDING, partition)
        )

    # --- the engine's side ---------------------------------------------------------------

    def submit(self, lane: Lane, records: list[Record]) -> None:
        loop = self._loops.get(lane.tp.partition)
        if loop is not None:
            loop.put(("records", lane, records))

    async def assigned(self, lanes: list[Lane]) -> None:
        for partition in sorted({lane.tp.partition for lane in lanes}):
            self._loops.start(partition, f"enrich-{partition}", self._partition_loop(partition))
            # Snapshots that arrived while this partition was elsewhere (or the worker
            # was down) have not been applied to its waiting rejections yet.
            self._queue_pass(partition, CATCH_UP)

    async def revoked(self, lanes: list[Lane], deadline: float) -> bool:
        """The batch in hand finishes (by `deadline`); the rest is dropped (the next holder
        reads it again). Nothing of the enrich stage's acts outside the broker."""
        partitions = sorted({lane.tp.partition for lane in lanes})
        for p in partitions:
            self._queued.pop(p, None)
        await self._loops.stop(partitions, deadline)
        return True

    async def handed_over(self, lanes: list[Lane], clean: bool) -> None:
        pass

    # --- R16 -------------------------------------------------------------------------------

    def snapshot_accepted(self, tenant: str) -> None:
        """A newer snapshot is in force for `tenant`: queue an R16 pass in every partition
        held here (never run inline: the register cache must not wait for it)."""
        for partition in self._loops:
            self._queue_pass(partition, tenant)

    def _queue_pass(self, partition: int, tenant: str) -> None:
        """One queued R16 pass per tenant is enough: it uses the newest snapshot."""
        loop = self._loops.get(partition)
        queued = self._queued.setdefault(partition, set())
        if loop is None or tenant in queued or CATCH_UP in queued:
            return
        queued.add(tenant)
        loop.put(("reevaluate", tenant))

    # --- one batch -------------------------------------------------------------------------

    async def handle(self, lane: Lane, records: list[Record]) -> None:
        """One batch of payment-status records of one partition, in offset order."""
        states = self.states(lane.tp.partition)
        s = self.s
        outputs: list[Output] = []
        changes: list[StateChange] = []
        handled: dict[Key, str] = {}
        counts = dict.fromkeys(_OUTCOMES, 0)  # metrics and the log line, once per batch
        now = datetime.now(UTC)
        # A log call costs even when filtered: per-payment lines only when asked for.
        debug = _root_log.isEnabledFor(logging.DEBUG)
        backlog = bool(records) and (
            self.ctx.behind(lane.tp, records[-1].offset) >= BACKLOG_RECORDS
        )
        for record in records:
            parsed = read_event(record.value)
            if isinstance(parsed, Unreadable):
                outputs.append(self._invalid(record, parsed))
                continue
            key = (parsed.tenant_id, parsed.payment_id)
            resend = record.header(RESEND_BY) is not None
            before = states.handled_as(key)
            seen = key in handled or (before is not None and not resend)
            step = intake(parsed, seen)  # R17
            if step is Intake.IGNORED:
                counts["ignored"] += 1
                continue
            if step is Intake.DUPLICATE:
                counts["duplicate"] += 1  # in the batch's line; each only at debug
                if debug:
                    log.debug(
                        "event_duplicate",
                        tenant_id=key[0],
                        payment_id=key[1],
                        event_id=parsed.event_id,
                    )
                continue
            self._evaluated += 1
            if self._evaluated % TIMING_SAMPLE:  # the histogram is a sample: timing costs
                result = evaluate(parsed, self.book.index(parsed.tenant_id))
            else:
                t0 = time.perf_counter()
                result = evaluate(parsed, self.book.index(parsed.tenant_id))
                metrics.ENRICH_SECONDS.observe(time.perf_counter() - t0)
            marks = Marks(
                first_evaluation=before is None and not resend,
                backlog=backlog,
                resend_by=record.header(RESEND_BY),
            )
            written = decided(
                s, result, parsed, record.value or b"", record, now, states=states, marks=marks
            )
            outputs += written.outputs
            changes += written.changes
            outcome = SUBMITTED if isinstance(result, Enriched) else REJECTED
            handled[key] = outcome
            counts[outcome] += 1
        for outcome, n in counts.items():
            if n:
                metrics.EVENTS.labels(outcome).inc(n)
        if any(counts.values()):
            log.info("batch_enriched", events=len(records), **counts)
        await self.ctx.write(outputs, changes, [(lane, r) for r in records])

    async def handle_refused(self, lane: Lane, records: list[Record]) -> None:
        """Payments Xledger refused (the post stage sent them here, to their state's
        owner): they wait for a newer snapshot (R16), like any rejection. The post stage
        wrote the rejection itself."""
        states = self.states(lane.tp.partition)
        changes: list[StateChange] = []
        outputs: list[Output] = []
        for record in records:
            try:
                refused = RefusedPayment.model_validate_json(record.value or b"")
            except ValidationError as exc:
                outputs.append(
                    self.dead_letter(record, DlqReason.INVALID, "ValidationError", describe(exc))
                )
                continue
            key = (refused.tenant_id, refused.payment_id)
            entry = pending_entry(refused.event, refused.snapshot_version, refused.source)
            changes.append(states.set_pending(key, entry, record))
            changes.append(states.set_handled(key, REJECTED, record))
        await self.ctx.write(outputs, changes, [(lane, r) for r in records])

    async def handle_one_by_one(self, lane: Lane, records: list[Record]) -> None:
        """After `handle` failed on a batch: each record alone, and the one that still
        fails is dead-lettered (reason crash) instead of stranding its batch."""
        for record in records:
            try:
                await self.handle(lane, [record])
            except DeliveryAbandoned:
                raise
            except Exception as exc:
                log.exception("event_crashed", error=repr(exc))
                error = f"the enrich stage failed on this event: {exc}"
                dead = self.dead_letter(record, DlqReason.CRASH, type(exc).__name__, error)
                await self.ctx.write([dead], (), [(lane, record)])

    def _invalid(self, record: Record, parsed: Unreadable) -> Output:
        metrics.EVENTS.labels("invalid").inc()
        log.warning(
            "event_invalid",
            event_id=parsed.event_id,
            payment_id=parsed.payment_id,
            error=parsed.error,
            partition=record.partition,
            offset=record.offset,
        )
        return self.dead_letter(record, DlqReason.INVALID, parsed.error_class, parsed.error)

    def dead_letter(
        self, record: Record, reason: DlqReason, error_class: str, error: str
    ) -> Output:
        """This stage's DLQ record for an input record (the one policy: dead_letters.py)."""
        return dead_letter(
            self.s.topics.dlq,
            record,
            reason=reason,
            error_class=error_class,
            error=error,
            stage="enrich",
        )

    # --- one partition's loop ----------------------------------------------------------

    def _partition_loop(self, partition: int) -> Callable[[KeyLoop[Item]], Awaitable[None]]:
        async def run(loop: KeyLoop[Item]) -> None:
            payments = self.s.topics.payments
            while True:
                item = await loop.queue.get()
                async with loop.critical():  # the item in hand finishes on a revoke
                    if item[0] == "reevaluate":
                        tenant = item[1]
                        self._queued.get(partition, set()).discard(tenant)
                        await self._reevaluate(partition, tenant)
                        continue
                    _, lane, records = item
                    if not lane.open:
                        continue  # handed over: whoever holds it now reads it again
                    if lane.tp.topic != payments:
                        await self.handle_refused(lane, records)
                        continue
                    try:
                        await self.handle(lane, records)
                    except DeliveryAbandoned:
                        raise
                    except Exception as exc:  # a bug met by some event: find it, go on
                        log.exception("enrich_batch_crashed", events=len(records), error=repr(exc))
                        await self.handle_one_by_one(lane, records)

        return run

    async def _reevaluate(self, partition: int, tenant: str) -> None:
        states = self.states(partition)
        tenants = sorted(states.waiting_tenants()) if tenant == CATCH_UP else [tenant]
        for t in tenants:
            await reevaluate(self.s, self.book, self.ctx, states, t)
