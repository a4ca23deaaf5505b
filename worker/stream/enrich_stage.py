"""The enrich stage: flyt.payment-status.v1 → submissions, rejections, dead letters; and R16,
the re-evaluation of waiting rejections when a newer snapshot arrives.

Per batch: read each event (unreadable → DLQ), R17 intake (ignored, duplicate), evaluate
against the tenant's snapshot (the pure core), then deliver every output, and only then
write the payments' state (`delivery.py`'s rule). The state lives in two mappings keyed
by the payment id's bytes, each value mapping tenant → state (two tenants may share a
payment id): faust tables in the worker, plain dicts in unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from worker import logs, metrics
from worker.config import Settings
from worker.contracts import DlqReason, PaymentStatusEvent, Rejection
from worker.contracts.reading import Unreadable, read_event
from worker.core import Enriched, evaluate
from worker.core.intake import Intake, intake
from worker.core.outcome import Rejected
from worker.core.register_book import RegisterBook
from worker.stream.dead_letters import dead_letter
from worker.stream.delivery import Deliver, Output

log = logs.get("worker.stream")
_root_log = logging.getLogger("worker.stream")

SUBMITTED = "submitted"
REJECTED = "rejected"
# Set (to the actor) on a Betalt event re-published by `rejections resend` (R13): the
# payment is evaluated again although it was handled before. Posting it twice is still
# impossible: the post stage looks its lines up in Xledger first.
RESEND_HEADER = "flyt.resend_by"


def _is_resend(message: Any) -> bool:
    headers = getattr(message, "headers", None) or []
    items = headers.items() if isinstance(headers, dict) else headers
    return any(k == RESEND_HEADER for k, _ in items)


Key = tuple[str, str]  # (tenant, payment)


_OUTCOMES = (SUBMITTED, REJECTED, "ignored", "duplicate")


class PaymentStates:
    """What the worker remembers per payment: `handled` (R17) and `pending` (R16)."""

    def __init__(
        self, handled: MutableMapping[bytes, Any], pending: MutableMapping[bytes, Any]
    ) -> None:
        self.handled = handled
        self.pending = pending

    def handled_as(self, tenant: str, payment: str) -> str | None:
        return (self.handled.get(payment.encode()) or {}).get(tenant)

    def waiting(self, tenant: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (key.decode(), states[tenant])
            for key, states in list(self.pending.items())
            if tenant in states
        ]

    def waiting_tenants(self) -> set[str]:
        return {t for _, states in list(self.pending.items()) for t in states}

    @staticmethod
    def put(table: MutableMapping[bytes, Any], key: Key, value: Any) -> None:
        tenant, payment = key
        current = dict(table.get(payment.encode()) or {})
        if value is None:
            current.pop(tenant, None)
        else:
            current[tenant] = value
        # An emptied entry is written as {}, never deleted: Tansu returns a tombstone as
        # empty bytes, which breaks faust's recovery of a JSON table.
        table[payment.encode()] = current


def _older(version: int | None, current: int) -> bool:
    return version is None or version < current


class EnrichStage:
    def __init__(
        self, s: Settings, book: RegisterBook, deliver: Deliver, states: PaymentStates
    ) -> None:
        self.s = s
        self.book = book
        self.deliver = deliver
        self.states = states
        self._reevaluating: dict[str, asyncio.Lock] = {}

    async def handle(self, events: list[Any]) -> None:
        """One batch of events (each with `.value` and `.message`), in offset order."""
        outputs: list[Output] = []
        handled: dict[Key, str] = {}
        pending: dict[Key, dict[str, Any] | None] = {}  # None: waits no longer
        sources: dict[Key, int] = {}
        counts = dict.fromkeys(_OUTCOMES, 0)  # metrics and the log line, once per batch
        now = datetime.now(UTC)
        for event in events:
            parsed = read_event(event.value)
            if isinstance(parsed, Unreadable):
                outputs.append(self._invalid(event.message, parsed))
                continue
            key = (parsed.tenant_id, parsed.payment_id)
            resend = _is_resend(event.message)
            seen = key in handled or (self.states.handled_as(*key) is not None and not resend)
            step = intake(parsed, seen)  # R17
            if step is Intake.IGNORED:
                counts["ignored"] += 1
                continue
            if step is Intake.DUPLICATE:
                counts["duplicate"] += 1
                log.info(
                    "event_duplicate", tenant_id=key[0], payment_id=key[1], event_id=parsed.event_id
                )
                continue
            t0 = time.perf_counter()
            result = evaluate(parsed, self.book.index(parsed.tenant_id))
            metrics.ENRICH_SECONDS.observe(time.perf_counter() - t0)
            sources[key] = id(event.message)
            if isinstance(result, Enriched):
                outputs.append(self._submission(parsed, result, now, event.message))
                handled[key] = SUBMITTED
                if resend:  # a resent payment that now posts no longer waits for R16
                    pending[key] = None
                counts[SUBMITTED] += 1
            else:
                outputs.append(self._rejection(parsed, result, now, event.message))
                handled[key] = REJECTED
                if result.retryable:  # R16: waits for a snapshot that fills the gap
                    pending[key] = {
                        "event": event.value.decode(),
                        "version": result.snapshot_version,
                    }
                counts[REJECTED] += 1
        for outcome, n in counts.items():
            if n:
                metrics.EVENTS.labels(outcome).inc(n)
        if any(counts.values()):
            log.info("batch_enriched", events=len(events), **counts)
        dead = await self.deliver(outputs)  # every output on the broker …
        for key, state in handled.items():  # … before the state is written
            if sources[key] not in dead:  # (dead-lettered instead: a replay may retry it)
                self.states.put(self.states.handled, key, state)
        for key, entry in pending.items():
            if sources[key] not in dead:
                self.states.put(self.states.pending, key, entry)

    async def handle_one_by_one(self, events: list[Any]) -> None:
        """After `handle` failed on a batch: each event alone, and the one that still
        fails is dead-lettered (reason crash) instead of stranding its batch unprocessed
        and uncommitted behind a faust agent restart."""
        for event in events:
            try:
                await self.handle([event])
            except Exception as exc:
                log.exception("event_crashed", error=repr(exc))
                error = f"the enrich stage failed on this event: {exc}"
                await self.deliver(
                    [self.dead_letter(event.message, DlqReason.CRASH, type(exc).__name__, error)]
                )

    # --- R16: re-evaluation on a newer snapshot ----------------------------------------

    async def catch_up(self) -> None:
        """Snapshots that arrived while these partitions were elsewhere (or the worker was
        down) have not been applied to their waiting rejections yet."""
        for tenant in sorted(self.states.waiting_tenants()):
            await self.reevaluate(tenant)

    async def reevaluate(self, tenant: str) -> None:
        """Evaluate the tenant's waiting rejections against its snapshot in force."""
        # One at a time per tenant: the snapshot listener and a catch-up may coincide.
        async with self._reevaluating.setdefault(tenant, asyncio.Lock()):
            await self._reevaluate_waiting(tenant)

    async def _reevaluate_waiting(self, tenant: str) -> None:
        index = self.book.index(tenant)
        if index is None:
            return
        # Only entries evaluated against an older version (None: before any snapshot);
        # this makes a repeat harmless.
        waiting = [
            (payment, entry)
            for payment, entry in self.states.waiting(tenant)
            if _older(entry.get("version"), index.version)
        ]
        if not waiting:
            return
        now = datetime.now(UTC)
        outputs: list[Output] = []
        done: list[Key] = []
        updated: list[tuple[Key, dict[str, Any]]] = []
        for payment, entry in waiting:
            event = PaymentStatusEvent.model_validate_json(entry["event"])
            result = evaluate(event, index)
            if isinstance(result, Enriched):
                outputs.append(self._submission(event, result, now))
                done.append((tenant, payment))
                metrics.REEVALUATIONS.labels(tenant, "submitted").inc()
            else:
                outputs.append(self._rejection(event, result, now))
                updated.append(((tenant, payment), {**entry, "version": index.version}))
                metrics.REEVALUATIONS.labels(tenant, "still_rejected").inc()
        await self.deliver(outputs)
        for key in done:
            self.states.put(self.states.handled, key, SUBMITTED)
            self.states.put(self.states.pending, key, None)
        for key, entry in updated:
            self.states.put(self.states.pending, key, entry)
        log.info(
            "rejections_reevaluated",
            tenant_id=tenant,
            version=index.version,
            submitted=len(done),
            still_rejected=len(updated),
        )

    # --- outputs -------------------------------------------------------------------------

    def _invalid(self, message: Any, parsed: Unreadable) -> Output:
        metrics.EVENTS.labels("invalid").inc()
        log.warning(
            "event_invalid",
            event_id=parsed.event_id,
            payment_id=parsed.payment_id,
            error=parsed.error,
            partition=message.partition,
            offset=message.offset,
        )
        return self.dead_letter(message, DlqReason.INVALID, parsed.error_class, parsed.error)

    def dead_letter(self, message: Any, reason: DlqReason, error_class: str, error: str) -> Output:
        """This stage's DLQ record for an input message (the one policy: dead_letters.py)."""
        return dead_letter(
            self.s.topics.dlq,
            message,
            reason=reason,
            error_class=error_class,
            error=error,
            stage="enrich",
        )

    def _submission(
        self, event: PaymentStatusEvent, result: Enriched, now: datetime, source: Any = None
    ) -> Output:
        sub = result.submission(event, now)
        # Per payment only at debug, and only asked for then: a log call is costly even
        # when filtered. A line per payment and per-event metric calls were ~30% of the
        # stage's own time (issue 13); the batch's counts go at info, and each rejection.
        if _root_log.isEnabledFor(logging.DEBUG):
            log.debug(
                "payment_enriched",
                tenant_id=event.tenant_id,
                payment_id=event.payment_id,
                event_id=event.event_id,
                snapshot_version=result.snapshot_version,
            )
        return Output(
            self.s.topics.submissions,
            event.tenant_id.encode(),
            sub.model_dump_json().encode(),
            source=source,
        )

    def _rejection(
        self, event: PaymentStatusEvent, result: Rejected, now: datetime, source: Any = None
    ) -> Output:
        return rejection_output(self.s.topics.rejections, result.rejection(event, now), source)


def rejection_output(topic: str, rejection: Rejection, source: Any = None) -> Output:
    """A rejection for the Økonomi tab, counted and logged: from this stage, and from the
    post stage for Xledger's refusals (R14)."""
    metrics.REJECTIONS.labels(rejection.tenant_id, str(rejection.reason)).inc()
    log.info(
        "payment_rejected",
        tenant_id=rejection.tenant_id,
        payment_id=rejection.payment_id,
        event_id=rejection.event_id,
        reason=str(rejection.reason),
        codes=[str(p.code) for p in rejection.problems],
        retryable=rejection.retryable,
    )
    return Output(
        topic, rejection.payment_id.encode(), rejection.model_dump_json().encode(), source=source
    )
