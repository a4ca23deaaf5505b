"""Rejected payments for finance staff: which wait, since when, why; and the resend.

A payment's rejections are read from the rejections topic, its receipts from the
receipts topic: a payment with a receipt is posted, whatever was rejected before;
one without is still waiting (for a register change, R16, or a person).

The resend (R13, Økonomi): the payment's original Betalt event is read back from the
payment-status topic and published there again, unchanged but for a header
`flyt.resend_by` naming the actor. The enrich stage evaluates such an event against the
tenant's snapshot in force although the payment was handled before, and delivers a
submission or a new rejection as for any event. It is harmless when repeated: a payment
already posted is skipped here, and one that is posted in between is found in Xledger by
its lines' external identifiers and not posted again (the post stage looks before it posts).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from worker.contracts import PaymentStatusEvent, ProblemCode, Rejection
from worker.contracts.headers import RESEND_BY
from worker.core import Enriched, evaluate
from worker.core.register_book import RegisterBook
from worker.kafka_clients.connection import Bootstrap
from worker.ops import audit
from worker.ops.topic_reader import DEFAULT_TIMEOUT_S, ReadStats, Record, Say, scan
from worker.ops.when import Period

Key = tuple[str, str]  # (tenant, payment)


@dataclass
class RejectedPayment:
    tenant_id: str
    payment_id: str
    latest: Rejection  # the newest rejection: its code and messages are the current ones
    first_at: datetime  # when it was first rejected (broker time)
    last_at: datetime
    rejections: int
    posted_at: datetime | None = None  # the receipt's posted_at, when there is one

    @property
    def state(self) -> str:
        return "posted" if self.posted_at else "waiting"

    def row(self) -> dict[str, Any]:
        r = self.latest
        return {
            "tenant_id": self.tenant_id,
            "payment_id": self.payment_id,
            "event_id": r.event_id,
            "code": str(r.reason),
            "message": r.problems[0].message,
            "problems": [
                {"code": str(p.code), "position": p.position, "message": p.message}
                for p in r.problems
            ],
            "retryable": r.retryable,
            "snapshot_version": r.snapshot_version,
            "rejected_since": self.first_at.isoformat(),
            "rejections": self.rejections,
            "state": self.state,
            "posted_at": self.posted_at.isoformat() if self.posted_at else None,
        }


@dataclass
class RejectionBook:
    payments: dict[Key, RejectedPayment] = field(default_factory=dict)
    unreadable: int = 0  # records on the rejections topic that are not Rejections

    def select(
        self,
        tenant: str | None = None,
        code: str | None = None,
        payments: list[str] | None = None,
        state: str | None = None,
        since: datetime | None = None,
    ) -> list[RejectedPayment]:
        """Newest rejection first."""
        out = [
            p
            for p in self.payments.values()
            if (tenant is None or p.tenant_id == tenant)
            and (code is None or str(p.latest.reason) == code)
            and (not payments or p.payment_id in payments)
            and (state is None or p.state == state)
            and (since is None or p.first_at >= since)
        ]
        return sorted(out, key=lambda p: (p.last_at, p.tenant_id, p.payment_id), reverse=True)

    def note_receipt(self, r: Record) -> None:
        """A receipt: the rejected payment it names (if any) is posted since."""
        body = r.json() or {}
        key = (str(body.get("tenant_id")), str(body.get("payment_id")))
        entry = self.payments.get(key)
        if entry is not None and entry.posted_at is None:
            try:
                entry.posted_at = datetime.fromisoformat(str(body.get("posted_at")))
            except ValueError:
                entry.posted_at = r.at

    def waiting(self, tenant: str) -> list[RejectedPayment]:
        return self.select(tenant=tenant, state="waiting")


def read_rejections(rejections: Iterable[Record], receipts: Iterable[Record]) -> RejectionBook:
    """The rejected payments (kept), and whether each has a receipt since (the receipts
    are only looked at: they may be streamed)."""
    book = RejectionBook()
    for r in sorted(rejections, key=lambda r: (r.timestamp_ms, r.partition, r.offset)):
        try:
            rej = Rejection.model_validate_json(r.value or b"")
        except ValidationError:
            book.unreadable += 1
            continue
        key = (rej.tenant_id, rej.payment_id)
        seen = book.payments.get(key)
        if seen is None:
            book.payments[key] = RejectedPayment(rej.tenant_id, rej.payment_id, rej, r.at, r.at, 1)
        else:
            seen.latest, seen.last_at, seen.rejections = rej, r.at, seen.rejections + 1
    for r in receipts:
        book.note_receipt(r)
    return book


def betalt_events(
    payments: Iterable[Record],
) -> dict[Key, list[tuple[Record, PaymentStatusEvent]]]:
    """Every readable Betalt event per payment, oldest first (other statuses are R17's)."""
    out: dict[Key, list[tuple[Record, PaymentStatusEvent]]] = {}
    for r in sorted(payments, key=lambda r: (r.timestamp_ms, r.partition, r.offset)):
        try:
            event = PaymentStatusEvent.model_validate_json(r.value or b"")
        except ValidationError:
            continue
        if event.status == "Betalt":
            out.setdefault((event.tenant_id, event.payment_id), []).append((r, event))
    return out


def newest_betalt(
    bootstrap: Bootstrap,
    topic: str,
    tenants: Collection[str] | None,
    recent: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Say | None = None,
) -> dict[str, list[tuple[Record, PaymentStatusEvent]]]:
    """Each tenant's (or each of `tenants`') `recent` newest Betalt payments (the newest
    event of each payment), newest first: read from the end of each partition back, the
    tail doubled until every tenant asked has enough or the topic was read whole."""
    last = max(recent, 100)
    while True:
        stats = ReadStats()
        found = betalt_events(
            scan(bootstrap, [topic], timeout_s=timeout_s, progress=progress, stats=stats, last=last)
        )
        latest = sorted(
            (pairs[-1] for pairs in found.values() if pairs),
            key=lambda pair: pair[0].timestamp_ms,
            reverse=True,
        )
        out: dict[str, list[tuple[Record, PaymentStatusEvent]]] = {}
        for pair in latest:
            tenant = pair[1].tenant_id
            if tenants is not None and tenant not in tenants:
                continue
            mine = out.setdefault(tenant, [])
            if len(mine) < recent:
                mine.append(pair)
        asked = tenants if tenants is not None else out
        if stats.whole or all(len(out.get(t, [])) >= recent for t in asked):
            return out
        last *= 4


# How far before a payment's first rejection its Betalt event is looked for: the worker
# rejects as it reads, unless it was behind; then wider, then the whole topic.
EVENT_LOOKBACK = (timedelta(days=1), timedelta(days=7), None)


def events_of(
    bootstrap: Bootstrap,
    topic: str,
    chosen: list[RejectedPayment],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Say | None = None,
) -> dict[Key, list[tuple[Record, PaymentStatusEvent]]]:
    """The Betalt events of these payments, sought from a little before their first
    rejection (widened while some are not found); the topic's key is the payment id, so
    only records keyed for one of them are read as JSON."""
    wanted = {p.payment_id.encode() for p in chosen}
    keys = {(p.tenant_id, p.payment_id) for p in chosen}
    earliest = min((p.first_at for p in chosen), default=None)
    found: dict[Key, list[tuple[Record, PaymentStatusEvent]]] = {}
    for back in EVENT_LOOKBACK:
        start = earliest - back if earliest is not None and back is not None else None
        records = (
            r
            for r in scan(
                bootstrap, [topic], period=Period(start), timeout_s=timeout_s, progress=progress
            )
            if r.key in wanted
        )
        found = {k: v for k, v in betalt_events(records).items() if k in keys}
        if set(found) == keys or start is None:
            break
    return found


def original_event(
    events: dict[Key, list[tuple[Record, PaymentStatusEvent]]], p: RejectedPayment
) -> tuple[Record, PaymentStatusEvent] | None:
    """The Betalt event the rejection was made from: the one with its event id, else the
    payment's newest Betalt event."""
    found = events.get((p.tenant_id, p.payment_id)) or []
    for record, event in reversed(found):
        if event.event_id == p.latest.event_id:
            return record, event
    return found[-1] if found else None


# --- resend --------------------------------------------------------------------------------


@dataclass
class ResendItem:
    payment: RejectedPayment
    source: Record | None  # the original Betalt event's record
    skip: str | None  # why it is not sent; None: it is
    expected: str | None = None  # what the snapshot in force makes of it now
    codes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        p = self.payment
        return {
            "tenant_id": p.tenant_id,
            "payment_id": p.payment_id,
            "rejected_for": str(p.latest.reason),
            "send": self.skip is None,
            "skip": self.skip,
            "source": f"{self.source.topic}/{self.source.position}" if self.source else None,
            "expected": self.expected,
            "codes": self.codes,
        }


def plan_resend(
    chosen: list[RejectedPayment],
    events: dict[Key, list[tuple[Record, PaymentStatusEvent]]],
    registers: RegisterBook,
) -> list[ResendItem]:
    """Which payments would be resent, and what the snapshot in force makes of each (the
    core's own evaluation: the worker will decide the same, unless the registers change
    in between)."""
    items = []
    for p in chosen:
        if p.posted_at is not None:
            items.append(ResendItem(p, None, f"already posted ({p.posted_at.isoformat()})"))
            continue
        found = original_event(events, p)
        if found is None:
            items.append(
                ResendItem(
                    p, None, "its Betalt event is no longer on the payment-status topic (retention)"
                )
            )
            continue
        record, event = found
        result = evaluate(event, registers.index(p.tenant_id))
        if isinstance(result, Enriched):
            v = result.snapshot_version
            refused = p.latest.reason == ProblemCode.XLEDGER_REFUSED
            same = refused and p.latest.snapshot_version == v
            expected = (
                f"to Xledger again with v{v}'s string, which it refused"
                if same
                else f"posts (v{v})"
            )
            items.append(ResendItem(p, record, None, expected))
        else:
            codes = [str(x.code) for x in result.problems]
            version = f"v{result.snapshot_version}" if result.snapshot_version else "no snapshot"
            items.append(ResendItem(p, record, None, f"rejected again ({version})", codes))
    return items


def resend_record(
    source: Record, actor: str
) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The original event again, headers kept, marked as a resend by `actor`: the mark
    the enrich stage honours (a resent payment is evaluated again, R13)."""
    headers = [(k, v) for k, v in source.headers if k != RESEND_BY]
    headers.append((RESEND_BY, actor.encode()))
    return source.topic, source.key, source.value, headers


def audit_items(items: list[ResendItem], sent: dict[Key, str]) -> list[audit.AuditItem]:
    out = []
    for item in items:
        p = item.payment
        where = sent.get((p.tenant_id, p.payment_id))
        out.append(
            audit.AuditItem(
                source=f"{item.source.topic}/{item.source.position}" if item.source else "-",
                outcome="sent" if where else ("skipped" if item.skip else "not_sent"),
                target=item.source.topic if item.source else None,
                tenant_id=p.tenant_id,
                payment_id=p.payment_id,
                reason=item.skip,
                sent_to=where,
            )
        )
    return out
