"""The register snapshots in force, read from the registers topic as the worker reads it.

Each tenant's snapshots are keyed by tenant, so they sit in one partition in publishing
order; offering them to a `RegisterBook` in that order gives the same snapshot in force
as every worker's register cache (the same checks, R1–R13; a refused snapshot leaves the
previous one in force).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from worker.contracts import RegisterSnapshot
from worker.contracts.reading import describe
from worker.core.register_book import RegisterBook
from worker.ops.topic_reader import Record


@dataclass(frozen=True)
class RefusedSnapshot:
    version: int | None
    at: datetime
    position: str
    reasons: list[str]


@dataclass
class RegisterHistory:
    book: RegisterBook
    accepted_at: dict[str, datetime] = field(
        default_factory=dict
    )  # broker time of the one in force
    refused: dict[str, list[RefusedSnapshot]] = field(default_factory=dict)
    unreadable: list[RefusedSnapshot] = field(default_factory=list)


def read_in_force(records: list[Record]) -> RegisterHistory:
    """The snapshot in force per tenant, and what was refused on the way."""
    history = RegisterHistory(RegisterBook())
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.value is None:  # a tombstone: the snapshot in force stays (as the worker does)
            continue
        try:
            snap = RegisterSnapshot.model_validate_json(r.value)
        except ValidationError as exc:
            history.unreadable.append(RefusedSnapshot(None, r.at, r.position, [describe(exc)]))
            continue
        offer = history.book.offer(snap)
        if offer.accepted:
            history.accepted_at[snap.tenant_id] = r.at
        else:
            history.refused.setdefault(snap.tenant_id, []).append(
                RefusedSnapshot(
                    snap.version,
                    r.at,
                    r.position,
                    [f"[{x.rule} {x.code}] {x.message}" for x in offer.refusals],
                )
            )
    return history
