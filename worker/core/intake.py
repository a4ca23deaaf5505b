"""R17: what happens to a readable event before any register is consulted."""

from __future__ import annotations

from enum import StrEnum

from worker.contracts.payment_event import PaymentStatusEvent, Status


class Intake(StrEnum):
    IGNORED = "ignored"  # not Betalt: counted, never posted
    DUPLICATE = "duplicate"  # a second Betalt event for a payment already handled
    EVALUATE = "evaluate"  # a first Betalt event: evaluate it against the registers


def intake(event: PaymentStatusEvent, already_handled: bool) -> Intake:
    """R17: only Betalt leads to a posting, and only once per payment."""
    if event.status is not Status.BETALT:
        return Intake.IGNORED
    if already_handled:
        return Intake.DUPLICATE
    return Intake.EVALUATE
