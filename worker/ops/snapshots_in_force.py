"""The register snapshots in force, read from the registers topic as the worker reads it.

Each tenant's snapshots are keyed by tenant, so they sit in one partition in publishing
order; applying them in that order as every worker's register cache does
(`apply_snapshot_record`: the same checks, R1–R13; a refused snapshot leaves the previous
one in force) gives the same snapshot in force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from worker.core.register_book import RegisterBook
from worker.core.snapshot_record import Applied, apply_snapshot_record
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
        applied = apply_snapshot_record(history.book, r.value)
        snap = applied.snapshot
        if applied.kind is Applied.TOMBSTONE:
            continue
        if snap is None:
            history.unreadable.append(RefusedSnapshot(None, r.at, r.position, [*applied.reasons]))
        elif applied.kind is Applied.ACCEPTED:
            history.accepted_at[snap.tenant_id] = r.at
        else:
            history.refused.setdefault(snap.tenant_id, []).append(
                RefusedSnapshot(snap.version, r.at, r.position, [*applied.reasons])
            )
    return history
