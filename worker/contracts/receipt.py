"""Receipt: proof that a payment is in Xledger (`xledger.receipts.v1`)."""

from __future__ import annotations

from pydantic import Field

from worker.contracts.types import Id, Record, SchemaVersion, Timestamp


class ReceiptLine(Record):
    extIdentifier: Id
    dbId: int


class Receipt(Record):
    schema_version: SchemaVersion = 1
    tenant_id: Id
    payment_id: Id
    event_id: Id | None = None
    lines: list[ReceiptLine] = Field(min_length=1)
    posted_at: Timestamp
    batch_id: Id
    already_present: bool = Field(
        default=False,
        description="True when Xledger already held the lines (found by lookup, not posted again)",
    )
    xledger_url: str | None = Field(
        default=None,
        description="The Xledger URL the lines were posted to (or found at): where `reconcile` "
        "looks the payment up again",
    )
    token_ref: Id | None = Field(
        default=None,
        description="The reference of the token they were posted with (R5: never the token): "
        "the token `reconcile` looks them up with",
    )
    duplicates_detected: list[Id] = Field(
        default_factory=list,
        description="External identifiers of this payment that Xledger holds more than once "
        "(a double: a person must reverse the extra voucher); empty when none",
    )
