"""R16: a payment rejected for a gap in the registers is evaluated again when a newer
register snapshot for its tenant arrives.

A pass covers one tenant in one partition held here (engine.md: R16 scans owned state
only), and runs in that partition's enrich task, never inline in the register cache.
Only entries evaluated against an older version than the one in force are taken, which
makes a repeated pass harmless. An output that cannot be written (too large for the
broker) becomes a dead letter carrying the payment's Betalt event, and the payment waits
no longer: never an endless retry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from worker import logs, metrics
from worker.config import Settings
from worker.contracts import DlqReason, PaymentStatusEvent
from worker.contracts.reading import describe
from worker.core import Enriched, evaluate
from worker.core.register_book import RegisterBook
from worker.engine.engine import StageContext
from worker.engine.records import Output, Record, StateChange
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.decision import decided
from worker.pipeline.outputs import event_record, parse_position
from worker.pipeline.payment_state import PaymentStates

log = logs.get("worker.pipeline")


def _older(version: int | None, current: int) -> bool:
    return version is None or version < current


def waiting_source(s: Settings, partition: int, payment: str, entry: dict[str, Any]) -> Record:
    """The waiting payment's Betalt event as the record it was read from."""
    where = parse_position(str(entry.get("source") or ""))
    topic, p, offset = where if where else (s.topics.payments, partition, -1)
    return event_record(topic, p, offset, payment, entry.get("event") or "")


async def reevaluate(
    s: Settings, book: RegisterBook, ctx: StageContext, states: PaymentStates, tenant: str
) -> None:
    """Evaluate the tenant's waiting rejections in this partition against its snapshot."""
    index = book.index(tenant)
    if index is None:
        return
    waiting = [
        (payment, entry)
        for payment, entry in states.waiting(tenant)
        if _older(entry.get("version"), index.version)
    ]
    if not waiting:
        return
    now = datetime.now(UTC)
    outputs: list[Output] = []
    changes: list[StateChange] = []
    sources: dict[int, tuple[str, str]] = {}
    submitted = still = 0
    for payment, entry in waiting:
        key = (tenant, payment)
        source = waiting_source(s, states.partition, payment, entry)
        sources[id(source)] = key
        try:
            event = PaymentStatusEvent.model_validate_json(entry["event"])
        except (ValidationError, KeyError, TypeError) as exc:
            error = describe(exc) if isinstance(exc, ValidationError) else repr(exc)
            outputs.append(
                dead_letter(
                    s.topics.dlq,
                    source,
                    reason=DlqReason.CRASH,
                    error_class=type(exc).__name__,
                    error=f"the waiting rejection's event cannot be read again: {error}",
                    stage="enrich",
                )
            )
            changes.append(states.set_pending(key, None))
            continue
        result = evaluate(event, index)
        written = decided(
            s,
            result,
            event,
            entry["event"].encode(),
            source,
            now,
            states=states,
            home=str(entry.get("source") or "") or None,
        )
        outputs += written.outputs
        changes += written.changes
        if isinstance(result, Enriched):
            metrics.REEVALUATIONS.labels(tenant, "submitted").inc()
            submitted += 1
        else:
            metrics.REEVALUATIONS.labels(tenant, "still_rejected").inc()
            still += 1
    dead = await ctx.write(outputs, changes)
    if dead:  # dead-lettered instead (too large to write): it waits no longer
        await ctx.write([], [states.set_pending(sources[d], None) for d in dead if d in sources])
    log.info(
        "rejections_reevaluated",
        tenant_id=tenant,
        partition=states.partition,
        version=index.version,
        submitted=submitted,
        still_rejected=still,
        dead_lettered=len(dead),
    )
