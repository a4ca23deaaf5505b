"""R18: one payment becomes one balanced voucher of two GL lines."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from worker.contracts.payment_event import PaymentStatusEvent
from worker.contracts.register_snapshot import TenantSettings
from worker.contracts.submission import ext_identifier


@dataclass(frozen=True, slots=True)
class VoucherLine:
    """One GL line in Xledger's field names; the wire twin is `contracts.GLLine`.

    A plain dataclass because the core builds two per payment on the hot path, where a
    pydantic model costs half the evaluation time.
    """

    extIdentifier: str
    account: str
    amount: Decimal
    currency: str
    postedDate: date
    text: str
    taxRule: str | None = None
    glObject1: str | None = None
    glObject2: str | None = None
    glObject3: str | None = None
    glObject4: str | None = None
    glObject5: str | None = None
    project: str | None = None
    bankAccountRef: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, as `GLLine` serialises it: two-decimal amounts, unset fields left out."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "amount":
                value = f"{value:.2f}"
            elif name == "postedDate":
                value = value.isoformat()
            out[name] = value
        return out


def voucher_lines(
    event: PaymentStatusEvent, settings: TenantSettings, fields: dict[str, str], vat_code: str
) -> tuple[VoucherLine, VoucherLine]:
    """The expense line and the Motkonto line, amounts +x and −x.

    `fields` maps Xledger field names (`account`, `glObject1`, `project` …) to values.
    """
    p = event.payment
    text = p.text or f"Flyt betaling {event.payment_id}"  # decided: Xledger wants a text
    expense = VoucherLine(
        extIdentifier=ext_identifier(event.tenant_id, event.payment_id, 1),
        amount=p.amount,
        currency=p.currency,
        postedDate=p.payment_date,
        text=text,
        taxRule=vat_code,
        **fields,
    )
    counter = VoucherLine(
        extIdentifier=ext_identifier(event.tenant_id, event.payment_id, 2),
        account=settings.counter_account,  # R3: Motkonto
        amount=-p.amount,
        currency=p.currency,
        postedDate=p.payment_date,
        text=text,
        bankAccountRef=settings.bank_account_pkey,  # R4: only when set
    )
    return expense, counter
