"""What one evaluation of a Betalt payment writes: the one step from the core's decision
(`Enriched` or `Rejected`) to outputs and state.

Used wherever a payment is evaluated: the enrich stage (a new Betalt event), R16 (a
waiting rejection evaluated again against a newer snapshot) and the post stage (R18: a
submission evaluated again before it is posted; R14: Xledger refused its content).

- Enriched: a submission, keyed by tenant; where the payment's state is held here, it is
  `submitted` (R17) and waits for R16 no longer.
- Rejected: a rejection for the Økonomi tab (R15); where the payment's state is held
  here, it is `rejected` and waits for a newer snapshot, which can cure every rejection
  the core makes (R16). The post stage does not hold it (engine.md, Ownership): it sends
  the payment back to the partition its Betalt event came from (`RefusedPayment`), whose
  holder keeps it waiting; without its event or that place it cannot wait, and the
  rejection says so (not retryable: resend it by hand, R13).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from worker.config import Settings
from worker.contracts import PaymentStatusEvent
from worker.core.outcome import Enriched, Rejected
from worker.engine.records import Output, Record, StateChange
from worker.pipeline.outputs import (
    NO_MARKS,
    Marks,
    RefusedPayment,
    parse_position,
    refused_output,
    rejection_output,
    submission_output,
)
from worker.pipeline.payment_state import REJECTED, SUBMITTED, PaymentStates, pending_entry
from worker.pipeline.topics import refused_topic


@dataclass
class Written:
    outputs: list[Output] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)


def decided(
    s: Settings,
    result: Enriched | Rejected,
    event: PaymentStatusEvent,
    event_json: bytes,
    source: Record,
    now: datetime,
    *,
    states: PaymentStates | None,
    home: str | None = None,
    marks: Marks = NO_MARKS,
) -> Written:
    """The outputs and state changes of `result` for `event` (read as `event_json`).

    `source`: the input record they answer (a dead letter carries it); `home`: where the
    Betalt event sits (`topic/partition@offset`; default `source`'s place); `states`: the
    payment's state when its partition is held here, else None (the post stage)."""
    key = (event.tenant_id, event.payment_id)
    out = Written()
    if isinstance(result, Enriched):
        value = result.submission_json(event, event_json, now)
        out.outputs.append(
            submission_output(s.topics.submissions, event.tenant_id, value, source, home, marks)
        )
        if states is not None:
            out.changes.append(states.set_handled(key, SUBMITTED, source))
            if states.waiting_entry(key) is not None:  # a resend or R16: it waits no longer
                out.changes.append(states.set_pending(key, None, source))
        return out
    rejection = result.rejection(event, now)
    where = home or source.position()
    if states is not None:
        out.changes.append(states.set_handled(key, REJECTED, source))
        # R16: every rejection the core makes waits for a snapshot that fills the gap.
        entry = pending_entry(event_json.decode(), result.snapshot_version, where)
        out.changes.append(states.set_pending(key, entry, source))
    else:
        position = parse_position(where)
        if position is not None:
            refused = RefusedPayment(
                tenant_id=event.tenant_id,
                payment_id=event.payment_id,
                snapshot_version=result.snapshot_version,
                event=event_json.decode(),
                source=where,
            )
            out.outputs.append(refused_output(refused_topic(s), position[1], refused, source))
        else:
            rejection = rejection.model_copy(update={"retryable": False})
    out.outputs.insert(0, rejection_output(s.topics.rejections, rejection, source))
    return out
