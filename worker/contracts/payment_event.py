"""PaymentStatusEvent: what Flyt emits on `flyt.payment-status.v1` when a payment changes status."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from worker.contracts.types import Amount, Code, Id, IsoDate, Record, SchemaVersion, Timestamp


class Status(StrEnum):
    NY = "Ny"
    SENDT_AUTOPAY = "SendtAutoPay"
    GODKJENT = "Godkjent"
    SENDT_BANK = "SendtBank"
    BETALT = "Betalt"  # the only status that leads to a posting (R17)
    AVVIST = "Avvist"
    KANSELLERT = "Kansellert"


# Dotted measure type codes: "2", "2.1", "8.2" (R9, decided).
MEASURE_TYPE_PATTERN = r"^\d+(\.\d+)*$"
MeasureType = Annotated[str, StringConstraints(pattern=MEASURE_TYPE_PATTERN)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class Measure(Record):
    measure_id: Id
    type: MeasureType
    start: IsoDate
    end: IsoDate | None = None


class Child(Record):
    measures: list[Measure] = Field(default_factory=list)
    group_ids: list[Id] = Field(default_factory=list)


class Payment(Record):
    amount: Amount
    currency: Currency
    payment_date: IsoDate
    category: Code
    vat_code: Code | None = None
    text: Annotated[str, StringConstraints(max_length=500)] | None = None
    child_id: Id
    org_unit_id: Id
    measure_id: Id | None = None


class PaymentStatusEvent(Record):
    schema_version: SchemaVersion
    event_id: Id
    occurred_at: Timestamp
    tenant_id: Id
    payment_id: Id
    status: Status
    payment: Payment
    child: Child = Field(default_factory=Child)
