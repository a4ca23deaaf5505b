"""What a tenant's posting loop works with: its items (a submission read, with its record)
and its tools (what the post stage gives it when it is made)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import ValidationError

from worker.config import Settings
from worker.contracts import PaymentStatusEvent, Submission, SubmissionToPost, TenantPause
from worker.contracts.reading import describe
from worker.core.register_book import RegisterBook
from worker.engine.engine import StageContext
from worker.engine.offsets import Lane
from worker.engine.records import Record
from worker.pipeline.read_budget import ReadBudget
from worker.xledger.client import XledgerClient


class Item(NamedTuple):
    """A submission read for posting, with the record it came in."""

    sub: SubmissionToPost
    record: Record

    def event(self) -> PaymentStatusEvent | str:
        """Its Betalt event, read in full now: on a refusal or for R18 (`SubmissionToPost`
        reads only whose it is). What is wrong with it when it cannot be read: the record
        is then no submission of this worker's (dead-lettered, `invalid_submission`)."""
        try:
            event = Submission.model_validate_json(self.record.value or b"").event
        except ValidationError as exc:
            return describe(exc)
        return event if event is not None else "a submission must carry its Betalt event"


@dataclass(frozen=True)
class PosterTools:
    """What a tenant's posting loop needs, given by the post stage."""

    s: Settings
    book: RegisterBook
    client: XledgerClient
    ctx: StageContext
    # A record keyed for another tenant goes to that tenant's loop in the same lane.
    route: Callable[[str, Lane, Record], None]
    # A record that is no submission: dead-lettered (by the stage, in the lane's order).
    stray: Callable[[Lane, Record, str], None]
    # When the outcomes of a partition were last pruned (partition → monotonic time).
    pruned: dict[int, float]
    # Seconds since the lane last received a record (a burst is over when it is quiet).
    quiet_for: Callable[[Lane], float]
    # Records the lane received over the last second (a burst while the enrich stage keeps
    # up with it: its submissions are not marked as a backlog's).
    arrivals_per_s: Callable[[Lane], int]
    # The tenant's pause by hand, if any (`tenant_control.py`); and an event set when a
    # tenant's pause changes (its loop looks again).
    paused: Callable[[str], TenantPause | None]
    pause_changed: Callable[[str], asyncio.Event]
    # The submissions all loops hold read at once (`read_budget.py`).
    reads: ReadBudget
