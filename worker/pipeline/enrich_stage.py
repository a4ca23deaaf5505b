"""The enrich stage: flyt.payment-status.v1 → submissions, rejections, dead letters; and R16,
the re-evaluation of waiting rejections when a newer snapshot arrives (`reevaluation.py`).

Per batch: read each event (unreadable → DLQ), R17 intake (ignored, duplicate), evaluate
against the tenant's snapshot (the pure core), then write every output, then the
payments' state, then the records are done (`engine/writer.py`).

Work is per partition, in order: the records of the payment-status partition p, the
refused payments sent back to p (`RefusedPayment`: co-partitioned with it), and R16
passes over p's waiting rejections all run in one task per partition, so that only one
thing at a time reads and writes p's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
from worker.engine.engine import Engine
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.outputs import RefusedPayment, rejection_output, submission_output
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


class EnrichStage:
    name = "enrich"

    def __init__(self, s: Settings, book: RegisterBook) -> None:
        self.s = s
        self.book = book
        self.topics: tuple[str, ...] = (s.topics.payments, refused_topic(s))
        self.engine: Engine | None = None  # set when the engine is built
        self._partitions: dict[int, _PartitionWork] = {}
        self._evaluated = 0

    @property
    def ctx(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the enrich stage is not attached to an engine")
        return self.engine

    def states(self, partition: int) -> PaymentStates:
        return PaymentStates(
            partition, self.ctx.store(HANDLED, partition), self.ctx.store(PENDING, partition)
        )

    # --- the engine's side ---------------------------------------------------------------

    def submit(self, lane: Lane, records: list[Record]) -> None:
        work = self._partitions.get(lane.tp.partition)
        if work is not None:
            work.put(("records", lane, records))

    async def assigned(self, lanes: list[Lane]) -> None:
        for partition in sorted({lane.tp.partition for lane in lanes}):
            work = self._partitions.get(partition)
            if work is None:
                work = self._partitions[partition] = _PartitionWork(self, partition)
            # Snapshots that arrived while this partition was elsewhere (or the worker
            # was down) have not been applied to its waiting rejections yet.
            work.put(("reevaluate", CATCH_UP))

    async def revoked(self, lanes: list[Lane], deadline: float) -> None:
        partitions = {lane.tp.partition for lane in lanes}
        works = [self._partitions.pop(p) for p in sorted(partitions) if p in self._partitions]
        await asyncio.gather(*(work.stop(deadline) for work in works))

    async def handed_over(self, lanes: list[Lane], clean: bool) -> None:
        pass

    # --- R16 -------------------------------------------------------------------------------

    def snapshot_accepted(self, tenant: str) -> None:
        """A newer snapshot is in force for `tenant`: queue an R16 pass in every partition
        held here (never run inline: the register cache must not wait for it)."""
        for work in self._partitions.values():
            work.put(("reevaluate", tenant))

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
            if isinstance(result, Enriched):
                value = result.submission_json(parsed, record.value or b"", now)
                first = before is None and not resend  # never handled: nobody posted it
                outputs.append(
                    submission_output(s.topics.submissions, key[0], value, record, first, backlog)
                )
                handled[key] = SUBMITTED
                changes.append(states.set_handled(key, SUBMITTED, record))
                if resend:  # a resent payment that now posts no longer waits for R16
                    changes.append(states.set_pending(key, None, record))
                counts[SUBMITTED] += 1
            else:
                rejection = result.rejection(parsed, now)
                outputs.append(rejection_output(s.topics.rejections, rejection, record))
                handled[key] = REJECTED
                changes.append(states.set_handled(key, REJECTED, record))
                if result.retryable:  # R16: waits for a snapshot that fills the gap
                    entry = pending_entry(
                        _text(record.value), result.snapshot_version, record.position()
                    )
                    changes.append(states.set_pending(key, entry, record))
                counts[REJECTED] += 1
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


def _text(value: bytes | None) -> str:
    return (value or b"").decode()


Item = tuple[Any, ...]


class _PartitionWork:
    """One partition's work, one item at a time: its records, in offset order per input
    topic, and R16 passes."""

    def __init__(self, stage: EnrichStage, partition: int) -> None:
        self.stage = stage
        self.partition = partition
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.queued_tenants: set[str] = set()
        self.idle = True
        self.task = asyncio.create_task(self._run(), name=f"enrich-{partition}")

    def put(self, item: Item) -> None:
        if item[0] == "reevaluate":
            if item[1] in self.queued_tenants or CATCH_UP in self.queued_tenants:
                return  # one queued pass per tenant is enough: it uses the newest snapshot
            self.queued_tenants.add(item[1])
        self.queue.put_nowait(item)

    async def stop(self, deadline: float) -> None:
        """Finish the item in hand (by `deadline`), drop the rest."""
        if not self.idle:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                async with asyncio.timeout_at(deadline):
                    while not self.idle:
                        await asyncio.sleep(0.01)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    async def _run(self) -> None:
        stage = self.stage
        payments = stage.s.topics.payments
        try:
            while True:
                self.idle = True
                item = await self.queue.get()
                self.idle = False
                if item[0] == "reevaluate":
                    tenant = item[1]
                    self.queued_tenants.discard(tenant)
                    await self._reevaluate(tenant)
                    continue
                _, lane, records = item
                if not lane.open:
                    continue  # handed over: whoever holds it now reads it again
                if lane.tp.topic != payments:
                    await stage.handle_refused(lane, records)
                    continue
                try:
                    await stage.handle(lane, records)
                except DeliveryAbandoned:
                    raise
                except Exception as exc:  # a bug met by some event: find it, the rest go on
                    log.exception("enrich_batch_crashed", events=len(records), error=repr(exc))
                    await stage.handle_one_by_one(lane, records)
        except DeliveryAbandoned as exc:
            log.warning("enrich_stopped_before_writing", partition=self.partition, error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("enrich_partition_failed", partition=self.partition, error=repr(exc))
            stage.ctx.fail(exc)

    async def _reevaluate(self, tenant: str) -> None:
        stage = self.stage
        states = stage.states(self.partition)
        tenants = sorted(states.waiting_tenants()) if tenant == CATCH_UP else [tenant]
        for t in tenants:
            await reevaluate(stage.s, stage.book, stage.ctx, states, t)
