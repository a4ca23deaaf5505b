"""What a tenant's posting loop works with: its items (a submission read, with its record
and its Betalt event) and its tools (what the post stage gives it when it is made)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from worker.config import Settings
from worker.contracts import PaymentStatusEvent, Submission, TenantPause
from worker.core.register_book import RegisterBook
from worker.engine.engine import StageContext
from worker.engine.offsets import Lane
from worker.engine.records import Record
from worker.xledger.client import XledgerClient


class Item(NamedTuple):
    """A submission, read, with the record it came in and the Betalt event it carries."""

    sub: Submission
    record: Record
    event: PaymentStatusEvent


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
    # The tenant's pause by hand, if any (`tenant_control.py`); and an event set when a
    # tenant's pause changes (its loop looks again).
    paused: Callable[[str], TenantPause | None]
    pause_changed: Callable[[str], asyncio.Event]
