"""One line of truth per tenant: the snapshot in force, whether posting is paused,
rejections waiting, dead letters, the last receipt.

A pause by hand is on the control topic: who, when and why. A pause for credits or a
refused token lives in a worker's memory: given every replica's metrics address (or
Prometheus, for the whole group), the status reads `xledger_tenant_paused` from each and
a tenant paused on any replica is paused. Without them it shows the evidence on the
topics: the tenant's newest `insufficient_credits` or `auth` dead letter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from worker.contracts import TenantPause
from worker.ops.dead_letter_queue import DeadLetter
from worker.ops.rejections import RejectionBook
from worker.ops.snapshots_in_force import RegisterHistory
from worker.ops.topic_reader import Record
from worker.ops.when import age

CREDITS_PAUSE = timedelta(minutes=20)  # worker/xledger/client.py credits_pause_s


class MetricsUnavailable(Exception):
    """No replica's metrics (or Prometheus) answered."""


# tenant → pause reason → where it was seen (a replica's metrics URL, or "prometheus")
GroupPauses = dict[str, dict[str, list[str]]]


def paused_from_metrics(url: str, timeout_s: float = 5.0) -> dict[str, list[str]]:
    """tenant → why its posting is paused (empty: not paused), from one worker's
    `xledger_tenant_paused` gauge (labels tenant and reason: credits, token or manual)."""
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


# The dashboards' own query (deploy/grafana/dashboards.py, PAUSED): the whole group.
PROMETHEUS_PAUSED = "max by (tenant, reason) (xledger_tenant_paused)"


def paused_from_prometheus(url: str, timeout_s: float = 10.0) -> dict[str, list[str]]:
    """The same, for the whole group, from Prometheus' HTTP API (the query the dashboards
    use: a tenant paused on any replica is paused)."""
    api = url.rstrip("/") + "/api/v1/query"
    try:
        body = httpx.get(api, params={"query": PROMETHEUS_PAUSED}, timeout=timeout_s)
        data = body.raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        raise MetricsUnavailable(f"cannot query Prometheus at {url}: {exc}") from None
    if data.get("status") != "success":
        raise MetricsUnavailable(f"Prometheus at {url} answered: {data.get('error') or data}")
    out: dict[str, list[str]] = {}
    for item in data.get("data", {}).get("result", []):
        labels, value = item.get("metric", {}), item.get("value", [0, "0"])
        tenant = labels.get("tenant")
        if tenant:
            reasons = out.setdefault(tenant, [])
            if float(value[1]) > 0:
                reasons.append(labels.get("reason") or "paused")
    return out


@dataclass
class GroupReading:
    """What the replicas (or Prometheus) say, and which of them could not be read."""

    pauses: GroupPauses = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # source → why


def group_paused(metrics_urls: list[str], prometheus_url: str | None) -> GroupReading:
    """Every replica's pauses together: a tenant paused on any of them is paused. Raises
    MetricsUnavailable only when none answers; the others are named in `unreadable`."""
    reading = GroupReading()
    sources: list[tuple[str, Callable[[str], dict[str, list[str]]], str]] = [
        (url, paused_from_metrics, url) for url in metrics_urls
    ]
    if prometheus_url:
        sources.append(("prometheus", paused_from_prometheus, prometheus_url))
    for name, read, url in sources:
        try:
            found = read(url)
        except MetricsUnavailable as exc:
            reading.unreadable[name] = str(exc)
            continue
        reading.sources.append(name)
        for tenant, reasons in found.items():
            by_reason = reading.pauses.setdefault(tenant, {})
            for reason in reasons:
                by_reason.setdefault(reason, []).append(name)
    if sources and not reading.sources:
        raise MetricsUnavailable("; ".join(reading.unreadable.values()))
    return reading


@dataclass
class LetterSummary:
    """One tenant's dead letters as the DLQ is streamed: counts, and the newest of the
    two reasons that pause a tenant by themselves."""

    count: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    newest: dict[str, DeadLetter] = field(default_factory=dict)  # reason → newest letter

    def add(self, d: DeadLetter) -> None:
        self.count += 1
        reason = d.reason or "(unknown)"
        self.by_reason[reason] += 1
        if reason in ("insufficient_credits", "auth"):
            seen = self.newest.get(reason)
            if seen is None or d.record.timestamp_ms >= seen.record.timestamp_ms:
                self.newest[reason] = d


def summarize_letters(letters: Iterable[DeadLetter]) -> dict[str, LetterSummary]:
    out: dict[str, LetterSummary] = {}
    for d in letters:
        if d.tenant_id:
            out.setdefault(d.tenant_id, LetterSummary()).add(d)
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
    paused_by_hand: dict[str, Any] | None = None  # who, when, why (the control topic)
    paused_on: dict[str, list[str]] | None = None  # reason → the replicas that say so

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def statuses(
    history: RegisterHistory,
    rejections: RejectionBook,
    letters: dict[str, LetterSummary],
    last: dict[str, Record],
    group: GroupReading | None,
    by_hand: dict[str, TenantPause],
    now: datetime | None = None,
) -> list[TenantStatus]:
    now = now or datetime.now(UTC)
    tenants = sorted(
        set(history.book.tenants())
        | set(history.refused)
        | {t for t, _ in rejections.payments}
        | set(letters)
        | set(last)
        | {t for t, p in by_hand.items() if p.paused}
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
        mine = letters.get(tenant, LetterSummary())
        hand = by_hand.get(tenant)
        state, why = _paused(tenant, mine, group, hand, now)
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
        status = TenantStatus(
            tenant,
            snapshot,
            refused_since,
            state,
            why,
            len(waiting),
            by_code,
            mine.count,
            dict(mine.by_reason.most_common()),
            last_receipt,
        )
        if hand is not None and hand.paused:
            status.paused_by_hand = {
                "by": hand.by,
                "roles": hand.roles,
                "at": hand.at.isoformat(),
                "for": age(hand.at, now),
                "reason": hand.reason,
            }
        if group is not None:
            status.paused_on = {r: list(where) for r, where in group.pauses.get(tenant, {}).items()}
        out.append(status)
    return out


def _paused(
    tenant: str,
    letters: LetterSummary,
    group: GroupReading | None,
    hand: TenantPause | None,
    now: datetime,
) -> tuple[str, str]:
    credits, token = letters.newest.get("insufficient_credits"), letters.newest.get("auth")
    evidence = (
        "; ".join(
            f"last {name} dead letter {age(d.record.at, now)} ago"
            for name, d in (("insufficient_credits", credits), ("auth", token))
            if d is not None
        )
        or "no insufficient_credits or auth dead letter"
    )
    reasons: dict[str, list[str]] = group.pauses.get(tenant, {}) if group is not None else {}
    if hand is not None and hand.paused:
        by = f"by hand by {hand.by} {age(hand.at, now)} ago ({hand.at.isoformat()}): {hand.reason}"
        others = [r for r in reasons if r != "manual"]
        more = f"; also {', '.join(others)} (xledger_tenant_paused)" if others else ""
        return "yes", by + more
    if group is not None:
        if reasons:
            where = "; ".join(f"{r} on {', '.join(w)}" for r, w in sorted(reasons.items()))
            return "yes", f"xledger_tenant_paused: {where} ({evidence})"
        missing = f", {len(group.unreadable)} replica(s) unreadable" if group.unreadable else ""
        return "no", f"xledger_tenant_paused=0 on {len(group.sources)} source(s){missing}"
    if credits is not None and now - credits.record.at < CREDITS_PAUSE:
        return "likely", f"{evidence}; a credits pause lasts up to 20 min (--metrics URL tells)"
    if token is not None:
        return (
            "likely",
            f"{evidence}; a refused token pauses until it is replaced (--metrics URL tells)",
        )
    return "unknown", f"not on any topic; {evidence} (--metrics URL tells)"
