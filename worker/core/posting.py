"""R18: one payment becomes one balanced voucher of two GL lines."""

from __future__ import annotations

from worker.contracts.payment_event import PaymentStatusEvent
from worker.contracts.register_snapshot import Settings
from worker.contracts.submission import GLLine, ext_identifier


def voucher_lines(
    event: PaymentStatusEvent, settings: Settings, fields: dict[str, str], vat_code: str
) -> tuple[GLLine, GLLine]:
    """The expense line and the Motkonto line, amounts +x and −x.

    `fields` maps Xledger field names (`account`, `glObject1`, `project` …) to values.
    """
    p = event.payment
    text = p.text or f"Flyt betaling {event.payment_id}"  # decided: Xledger wants a text
    common = {
        "currency": p.currency,
        "postedDate": p.payment_date,
        "text": text,
    }
    expense = GLLine.model_construct(
        extIdentifier=ext_identifier(event.tenant_id, event.payment_id, 1),
        amount=p.amount,
        taxRule=vat_code,
        **common,
        **fields,
    )
    counter = GLLine.model_construct(
        extIdentifier=ext_identifier(event.tenant_id, event.payment_id, 2),
        account=settings.counter_account,  # R3: Motkonto
        amount=-p.amount,
        bankAccountRef=settings.bank_account_pkey,  # R4: only when set
        **common,
    )
    return expense, counter
