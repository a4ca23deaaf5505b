"""One way to apply a record of the registers topic (`flyt.registers.v1`) to a RegisterBook,
and one way to word a refusal: the worker's register cache, the operator tools that read
the snapshot in force back, `enrich` and `whatif` all judge a snapshot alike (R1–R13).

A tombstone (no value) changes nothing: the tenant's snapshot in force stays (decided). A
value that is no RegisterSnapshot is unreadable; one the rules refuse leaves the previous
snapshot in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from worker.contracts import RegisterSnapshot
from worker.contracts.reading import describe
from worker.core.register_book import RegisterBook
from worker.core.snapshot_rules import SnapshotRefusal


class Applied(StrEnum):
    TOMBSTONE = "tombstone"
    UNREADABLE = "unreadable"
    REFUSED = "refused"
    ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class AppliedRecord:
    kind: Applied
    snapshot: RegisterSnapshot | None = None  # None: a tombstone or an unreadable record
    reasons: tuple[str, ...] = ()  # why unreadable or refused, one line each


def refusal_text(r: SnapshotRefusal) -> str:
    """A refusal as operators and logs read it: `[R7 MISSING_POSITION_1] …`."""
    return f"[{r.rule} {r.code}] {r.message}"


def apply_snapshot_record(book: RegisterBook, value: bytes | None) -> AppliedRecord:
    """Offer the record's snapshot to `book`, as every worker's register cache does."""
    if not value:
        return AppliedRecord(Applied.TOMBSTONE)
    try:
        snapshot = RegisterSnapshot.model_validate_json(value)
    except ValidationError as exc:
        return AppliedRecord(Applied.UNREADABLE, reasons=(describe(exc),))
    offer = book.offer(snapshot)
    if not offer.accepted:
        reasons = tuple(refusal_text(r) for r in offer.refusals)
        return AppliedRecord(Applied.REFUSED, snapshot, reasons)
    return AppliedRecord(Applied.ACCEPTED, snapshot)
