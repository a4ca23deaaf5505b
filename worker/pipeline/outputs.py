"""The records the stages write, built in one place: submissions, rejections, refused
payments on their way back to their state's owner, and dead letters (`dead_letters.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from worker import logs, metrics
from worker.contracts import Rejection
from worker.contracts.headers import BACKLOG, FIRST_EVALUATION, RESEND_BY, SOURCE
from worker.engine.records import Output, Record

log = logs.get("worker.pipeline")


@dataclass(frozen=True, slots=True)
class Marks:
    """What a submission's headers say of how it was made (`contracts/headers.py`)."""

    first_evaluation: bool = False  # the payment's first (flyt.first_evaluation)
    backlog: bool = False  # made while working off a backlog (flyt.backlog)
    resend_by: bytes | None = None  # made from a resent Betalt event (flyt.resend_by)


NO_MARKS = Marks()


def submission_output(
    topic: str,
    tenant_id: str,
    value: bytes,
    source: Record,
    home: str | None = None,
    marks: Marks = NO_MARKS,
) -> Output:
    """A submission (its wire bytes), keyed by tenant, with where its Betalt event sits
    (`flyt.source`, `home`, by default `source`'s position: a refusal goes back there) and
    its marks."""
    headers = [(SOURCE, (home or source.position()).encode())]
    if marks.first_evaluation:
        headers.append((FIRST_EVALUATION, b"1"))
    if marks.backlog:
        headers.append((BACKLOG, b"1"))
    if marks.resend_by is not None:
        headers.append((RESEND_BY, marks.resend_by))
    return Output(topic, tenant_id.encode(), value, headers, source=source)


def rejection_output(topic: str, rejection: Rejection, source: Record | None = None) -> Output:
    """A rejection for the Økonomi tab, counted and logged: from the enrich stage, and from
    the post stage for Xledger's refusals (R14)."""
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


class RefusedPayment(BaseModel):
    """A payment Xledger refused (R14), sent by the post stage to the partition where its
    Betalt event arrived, whose holder keeps it waiting for a newer snapshot (R16)."""

    tenant_id: str
    payment_id: str
    snapshot_version: int | None
    event: str  # the Betalt event, JSON
    source: str  # where the Betalt event was read: topic/partition@offset


def refused_output(topic: str, partition: int, refused: RefusedPayment, source: Record) -> Output:
    return Output(
        topic,
        refused.payment_id.encode(),
        refused.model_dump_json().encode(),
        source=source,
        partition=partition,
    )


def parse_position(position: str) -> tuple[str, int, int] | None:
    """`topic/partition@offset` → (topic, partition, offset), or None."""
    topic, _, rest = position.rpartition("/")
    partition, _, offset = rest.partition("@")
    if not topic or not partition.isdigit() or not offset.lstrip("-").isdigit():
        return None
    return topic, int(partition), int(offset)


def event_record(topic: str, partition: int, offset: int, payment_id: str, event: Any) -> Record:
    """A stored Betalt event as the input record it came from: what a dead letter of a
    re-evaluation carries (R16: never an endless retry)."""
    value = event.encode() if isinstance(event, str) else event
    return Record(topic, partition, offset, payment_id.encode(), value)
