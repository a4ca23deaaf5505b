"""One line of truth per tenant: the snapshot in force, whether posting is paused,
rejections waiting, dead letters, the last receipt.

Pausing (Xledger reported insufficient credits) lives in the worker's memory, not on a
topic. From the topics alone the status shows the evidence instead: the tenant's newest
`insufficient_credits` dead letter and whether it is younger than the pause (20 min by
default). Given the worker's metrics address, it reads `xledger_tenant_paused` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from worker.ops.dead_letter_queue import DeadLetter
from worker.ops.rejections import RejectionBook, last_receipts
from worker.ops.snapshots_in_force import RegisterHistory
from worker.ops.topic_reader import Record
from worker.ops.when import age

CREDITS_PAUSE = timedelta(minutes=20)  # worker/xledger/client.py credits_pause_s


class MetricsUnavailable(Exception):
    """The worker's metrics address did not answer."""


def paused_from_metrics(url: str, timeout_s: float = 5.0) -> dict[str, list[str]]:
    """tenant → why its posting is paused (empty: not paused), from a worker's
    `xledger_tenant_paused` gauge (labels tenant and reason: credits or token)."""
    try:
        text = httpx.get(url, timeout=timeout_s).raise_for_status().text
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(f"cannot read the worker's metrics at {url}: {exc}") from None
    out: dict[str, list[str]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "xledger_tenant_paused":
            for sample in family.samples:
                tenant = sample.labels.get("tenant") or sample.labels.get("tenant_id")
                if tenant:
                    reasons = out.setdefault(tenant, [])
                    if sample.value > 0:
                        reasons.append(sample.labels.get("reason") or "paused")
    return out


@dataclass
class TenantStatus:
    tenant_id: str
    snapshot: dict[str, Any] | None
    refused_since: list[dict[str, Any]]  # snapshots refused after the one in force
    paused: str  # yes | no | unknown
    paused_why: str
    waiting: int
    waiting_by_code: dict[str, int]
    dead_letters: int
    dead_letters_by_reason: dict[str, int]
    last_receipt: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def statuses(
    history: RegisterHistory,
    rejections: RejectionBook,
    letters: list[DeadLetter],
    receipts: list[Record],
    paused: dict[str, list[str]] | None,
    now: datetime | None = None,
) -> list[TenantStatus]:
    now = now or datetime.now(UTC)
    last = last_receipts(receipts)
    tenants = sorted(
        set(history.book.tenants())
        | set(history.refused)
        | {t for t, _ in rejections.payments}
        | {d.tenant_id for d in letters if d.tenant_id}
        | set(last)
    )
    out = []
    for tenant in tenants:
        index = history.book.index(tenant)
        snapshot = None
        refused_since: list[dict[str, Any]] = []
        if index is not None:
            snap = index.snapshot
            seen_at = history.accepted_at.get(tenant)
            snapshot = {
                "version": snap.version,
                "published_at": snap.published_at.isoformat(),
                "age": age(snap.published_at, now),
                "published_by": snap.published_by.user_id,
                "roles": snap.published_by.roles,
                "on_topic_at": seen_at.isoformat() if seen_at else None,
            }
        in_force_at = history.accepted_at.get(tenant)
        for r in history.refused.get(tenant, []):
            if in_force_at is None or r.at > in_force_at:
                refused_since.append(
                    {"version": r.version, "at": r.at.isoformat(), "reasons": r.reasons}
                )
        waiting = rejections.waiting(tenant)
        by_code: dict[str, int] = {}
        for p in waiting:
            by_code[str(p.latest.reason)] = by_code.get(str(p.latest.reason), 0) + 1
        mine = [d for d in letters if d.tenant_id == tenant]
        by_reason: dict[str, int] = {}
        for d in mine:
            by_reason[d.reason or "(unknown)"] = by_reason.get(d.reason or "(unknown)", 0) + 1
        state, why = _paused(tenant, mine, paused, now)
        receipt = last.get(tenant)
        last_receipt = None
        if receipt is not None:
            body = receipt.json() or {}
            last_receipt = {
                "payment_id": body.get("payment_id"),
                "posted_at": body.get("posted_at"),
                "age": age(receipt.at, now),
                "position": receipt.position,
            }
        out.append(
            TenantStatus(
                tenant,
                snapshot,
                refused_since,
                state,
                why,
                len(waiting),
                by_code,
                len(mine),
                by_reason,
                last_receipt,
            )
        )
    return out


def _paused(
    tenant: str, letters: list[DeadLetter], paused: dict[str, list[str]] | None, now: datetime
) -> tuple[str, str]:
    def newest(reason: str) -> DeadLetter | None:
        found = [d for d in letters if d.reason == reason]
        return max(found, key=lambda d: d.record.timestamp_ms) if found else None

    credits, token = newest("insufficient_credits"), newest("auth")
    evidence = (
        "; ".join(
            f"last {name} dead letter {age(d.record.at, now)} ago"
            for name, d in (("insufficient_credits", credits), ("auth", token))
            if d is not None
        )
        or "no insufficient_credits or auth dead letter"
    )
    if paused is not None:
        reasons = paused.get(tenant) or []
        if reasons:
            return "yes", f"xledger_tenant_paused: {', '.join(reasons)} ({evidence})"
        return "no", "xledger_tenant_paused=0"
    if credits is not None and now - credits.record.at < CREDITS_PAUSE:
        return "likely", f"{evidence}; a credits pause lasts up to 20 min (--metrics URL tells)"
    if token is not None:
        return (
            "likely",
            f"{evidence}; a refused token pauses until it is replaced (--metrics URL tells)",
        )
    return "unknown", f"not on any topic; {evidence} (--metrics URL tells)"
