"""What the core decides for one Betalt payment: Enriched (postable) or Rejected (R14)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from worker.contracts.payment_event import PaymentStatusEvent
from worker.contracts.rejection import Problem, ProblemCode, Rejection
from worker.contracts.submission import GLLine, Submission, submission_json
from worker.core.posting import VoucherLine


class PaymentIds(Protocol):
    """What names a payment: an event has these, and so has a Submission."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def payment_id(self) -> str: ...
    @property
    def event_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Enriched:
    snapshot_version: int
    dimensions: dict[str, str]  # position (as a string) → value
    vat_code: str
    lines: tuple[VoucherLine, VoucherLine]
    xledger_url: str  # R2: the entity it was evaluated for (R18)
    token_ref: str  # R5: the token reference of that snapshot (R18's lookup)

    def submission(self, event: PaymentStatusEvent, created_at: datetime) -> Submission:
        return Submission.model_construct(
            schema_version=1,
            tenant_id=event.tenant_id,
            payment_id=event.payment_id,
            event_id=event.event_id,
            snapshot_version=self.snapshot_version,
            dimensions=self.dimensions,
            vat_code=self.vat_code,
            # Built from the core's own checked values: constructed, not validated again.
            lines=[GLLine.model_construct(**line.fields()) for line in self.lines],
            created_at=created_at,
            event=event,
            xledger_url=self.xledger_url,
            token_ref=self.token_ref,
        )

    def submission_json(
        self, event: PaymentStatusEvent, event_json: bytes, created_at: datetime
    ) -> bytes:
        """`submission(...).model_dump_json()`, parse-equal and three times cheaper:
        `event_json` is the event as it was read (already validated)."""
        return submission_json(
            tenant_id=event.tenant_id,
            payment_id=event.payment_id,
            event_id=event.event_id,
            snapshot_version=self.snapshot_version,
            dimensions=self.dimensions,
            vat_code=self.vat_code,
            lines=[line.to_json() for line in self.lines],
            created_at=created_at,
            xledger_url=self.xledger_url,
            event_json=event_json,
            token_ref=self.token_ref,
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    snapshot_version: int | None
    problems: tuple[Problem, ...]

    @property
    def reason(self) -> ProblemCode:
        return self.problems[0].code

    def rejection(self, event: PaymentIds, created_at: datetime | None) -> Rejection:
        return Rejection.model_construct(
            schema_version=1,
            tenant_id=event.tenant_id,
            payment_id=event.payment_id,
            event_id=event.event_id,
            snapshot_version=self.snapshot_version,
            reason=self.reason,
            problems=list(self.problems),
            # R16: a newer register snapshot can cure every rejection the core makes. Each
            # of its problems is a register gap or a register conflict; so is Xledger's
            # refusal of an account, dimension value or tax code it does not know (R14,
            # decided): a register change can map it to one it knows. A rejection that
            # cannot wait for one is made not retryable where that is known (the post
            # stage, for a refused payment: `pipeline/decision.py`).
            retryable=True,
            created_at=created_at,
        )
