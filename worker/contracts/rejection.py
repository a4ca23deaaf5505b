"""Rejection: a payment that cannot be posted, for the Økonomi tab.

Published on `flyt.payment-rejections.v1`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from worker.contracts.types import Id, Record, SchemaVersion, Timestamp


class ProblemCode(StrEnum):
    """Stable problem codes (contracts.md; R15). Finance staff and dashboards rely on them."""

    UNKNOWN_TENANT = "UNKNOWN_TENANT"
    MISSING_ACCOUNT = "MISSING_ACCOUNT"
    UNKNOWN_ORG_UNIT = "UNKNOWN_ORG_UNIT"
    MISSING_DIMENSION_VALUE = "MISSING_DIMENSION_VALUE"
    AMBIGUOUS_REGISTER = "AMBIGUOUS_REGISTER"
    GROUP_CONFLICT = "GROUP_CONFLICT"
    MISSING_VAT_CODE = "MISSING_VAT_CODE"
    UNKNOWN_VAT_CODE = "UNKNOWN_VAT_CODE"
    # Added by the post stage: Xledger refused the posting permanently (validation).
    XLEDGER_REFUSED = "XLEDGER_REFUSED"


class Problem(Record):
    code: ProblemCode
    position: int | None = Field(description="Dimension position; null for VAT and tenant problems")
    message: str = Field(description="Norwegian text for the Økonomi tab")


class Rejection(Record):
    schema_version: SchemaVersion = 1
    tenant_id: Id
    payment_id: Id
    event_id: Id
    snapshot_version: int | None
    reason: ProblemCode = Field(description="The first problem's code")
    problems: list[Problem] = Field(min_length=1)
    retryable: bool = Field(description="True when fixing a register can cure it (R16)")
    created_at: Timestamp | None = None
