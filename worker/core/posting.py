"""R18: one payment becomes one balanced voucher of two GL lines."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from worker.contracts.payment_event import PaymentStatusEvent
from worker.contracts.register_snapshot import TenantSettings
from worker.contracts.submission import OPTIONAL_FIELDS, ext_identifier


class VoucherLine(NamedTuple):
    """One GL line in Xledger's field names; the wire twin is `contracts.GLLine`.

    Immutable, and a named tuple rather than a frozen dataclass or a pydantic model:
    the core builds two per payment on the hot path, where a frozen dataclass's
    field-by-field `object.__setattr__` cost 2.4 µs a line and a named tuple costs 0.9.
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

    def fields(self) -> dict[str, Any]:
        """The fields that are set, as `GLLine` holds them (Decimal amount, date)."""
        return {name: v for name, v in zip(self._fields, self, strict=True) if v is not None}

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, as `GLLine` serialises it: two-decimal amounts, unset fields left out.
        (Written out field by field: it runs twice per payment on the hot path.)"""
        out: dict[str, Any] = {
            "extIdentifier": self.extIdentifier,
            "account": self.account,
            "amount": f"{self.amount:.2f}",
            "currency": self.currency,
            "postedDate": self.postedDate.isoformat(),
            "text": self.text,
        }
        for name, value in zip(OPTIONAL_FIELDS, self[6:], strict=True):
            if value is not None:
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


def settings_changed(lines: list[Any], url: str | None, settings: TenantSettings) -> bool:
    """R18 (decided): was this voucher decided under other Xledger settings than the ones
    in force (another URL, Motkonto or Bankkonti-pkey)? Then it is evaluated again before
    it is posted: a voucher never goes to another entity, or with another counter line,
    than the registers in force say. `lines` are the voucher's (expense, counter); `url`
    the one it was evaluated for (None when not recorded: only the counter line counts)."""
    counter = lines[1]
    if url is not None and url != settings.url:
        return True
    if counter.account != settings.counter_account:
        return True
    return (counter.bankAccountRef or None) != (settings.bank_account_pkey or None)
