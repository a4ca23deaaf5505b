"""`worker reconcile`: the month-end proof. For every Betalt payment of a period, its outcome
on the topics and its vouchers in Xledger, judged by the one ledger verdict
(`worker/core/ledger_verdict.py`).

1. read the topics whole (assigned partitions, no consumer group: `topic_reader`): the
   Betalt events of the period, and every receipt, rejection, dead letter and submission;
2. per tenant, the snapshot in force (read as the worker reads it) gives Xledger's URL and
   the token's reference; the payments' lines are looked up in Xledger through the
   client's read-only lookup (both staging and the journal, paced as posting is, with
   that tenant's own token);
3. the verdict per payment, counted per tenant; a table for people, JSON for machines.

Nothing is written anywhere: Xledger is only read, the topics are only read.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.config import Topics
from worker.contracts.headers import DLQ_REASON
from worker.core.ledger_verdict import (
    SEVERITY,
    Evidence,
    Finding,
    Key,
    LedgerVerdict,
    Line,
    Outcome,
    OutcomeKind,
    ledger_verdict,
)
from worker.ops.safe_text import escape
from worker.ops.snapshots_in_force import read_in_force
from worker.ops.topic_reader import Record
from worker.ops.when import age
from worker.xledger.client import LOOKUP_IDS_PER_REQUEST, Target, XledgerClient
from worker.xledger.errors import LookupFailed
from worker.xledger.wire import Lookup, posting_nodes

EXIT_CLEAN = 0
EXIT_UNFINISHED = 1
EXIT_DIFFERENCES = 5

Say = Callable[[str], None]


@dataclass
class Gathered:
    """What the topics say about the period's Betalt payments."""

    evidence: dict[Key, Evidence] = field(default_factory=dict)
    betalt_events: int = 0  # Betalt events in the period (a payment may have several)
    oldest_event: datetime | None = None  # the payment-status topic's oldest record
    # tenant → where and as whom to look its payments up, or why that cannot be done
    targets: dict[str, Target | str] = field(default_factory=dict)


def gather(
    records: Mapping[str, list[Record]],
    topics: Topics,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
) -> Gathered:
    """The evidence per Betalt payment whose event arrived within [since, until] (broker
    time, as the other operator commands count), of `tenant` or all."""
    g = Gathered()
    for r in records.get(topics.payments, []):
        if g.oldest_event is None or r.at < g.oldest_event:
            g.oldest_event = r.at
        key = _betalt(r)
        if key is None or (tenant and key[0] != tenant):
            continue
        if (since and r.at < since) or (until and r.at > until):
            continue
        g.betalt_events += 1
        g.evidence.setdefault(key, Evidence(key))
    for r in records.get(topics.receipts, []):
        _note(g, r, OutcomeKind.RECEIPT, "")
    for r in records.get(topics.rejections, []):
        body = r.json() or {}
        _note(g, r, OutcomeKind.REJECTION, str(body.get("reason") or "?"))
    for r in records.get(topics.dlq, []):
        reason = dict(r.headers).get(DLQ_REASON, b"?").decode("utf-8", "replace")
        _note(g, r, OutcomeKind.DEAD_LETTER, reason)
    for r in records.get(topics.submissions, []):
        body = r.json() or {}
        e = g.evidence.get(_key_of(body) or ("", ""))
        if e is not None:
            e.submitted.append([_submitted(x) for x in body.get("lines") or []])
    history = read_in_force(records.get(topics.registers, []))
    for t in sorted({k[0] for k in g.evidence}):
        index = history.book.index(t)
        if index is None:
            g.targets[t] = "no valid register snapshot in force"
        else:
            s = index.settings
            g.targets[t] = Target(t, s.url, s.token_ref, index.snapshot.test_tenant)
    return g


def _betalt(r: Record) -> Key | None:
    body = r.json()
    if body is None or body.get("status") != "Betalt":
        return None  # unreadable events are dead-lettered by the worker: not payments
    return _key_of(body)


def _key_of(body: Mapping[str, Any]) -> Key | None:
    tenant, payment = body.get("tenant_id"), body.get("payment_id")
    return (tenant, payment) if isinstance(tenant, str) and isinstance(payment, str) else None


def _note(g: Gathered, r: Record, kind: OutcomeKind, reason: str) -> None:
    # A dead letter holds the original record (a Betalt event or a submission): both
    # name the payment.
    e = g.evidence.get(_key_of(r.json() or {}) or ("", ""))
    if e is not None:
        e.outcomes.append(Outcome(kind, r.timestamp_ms, reason))


def _submitted(line: Mapping[str, Any]) -> Line:
    return Line(
        str(line.get("extIdentifier")),
        line.get("account"),
        _decimal(line.get("amount")),
        line.get("postedDate"),
    )


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except ArithmeticError:
        return None


def held_lines(found: Lookup) -> list[Line]:
    """One Line per posting Xledger holds (`wire.postings`: an import item and the journal
    entry made of it are one posting), with the values of its nodes."""
    out = []
    for ext_id, nodes in found.by_ext_id().items():
        for n in posting_nodes(nodes):
            out.append(Line(ext_id, n.account, n.amount, n.posted_date, n.db_id))
    return out


async def look_up(client: XledgerClient, g: Gathered, say: Say) -> dict[str, str]:
    """Each tenant's payments looked up in Xledger, into their evidence; returns the
    tenants that could not be checked, and why."""
    not_checked: dict[str, str] = {}
    by_tenant: dict[str, list[Evidence]] = defaultdict(list)
    for e in g.evidence.values():
        by_tenant[e.key[0]].append(e)
    for n, (tenant, payments) in enumerate(sorted(by_tenant.items()), start=1):
        target = g.targets.get(tenant)
        if not isinstance(target, Target):
            not_checked[tenant] = target or "no register snapshot"
            continue
        ids = [f"flyt:{t}:{p}:{i}" for t, p in (e.key for e in payments) for i in (1, 2)]
        found = Lookup()
        try:
            for start in range(0, len(ids), LOOKUP_IDS_PER_REQUEST):
                chunk = ids[start : start + LOOKUP_IDS_PER_REQUEST]
                found.nodes += (await client.lookup(target, chunk, details=True)).nodes
                done = min(len(ids), start + len(chunk)) // 2
                say(f"tenant {n}/{len(by_tenant)} {tenant}: {done}/{len(payments)} payments")
        except LookupFailed as exc:
            not_checked[tenant] = f"Xledger could not be asked: {exc}"
            continue
        held: dict[Key, list[Line]] = defaultdict(list)
        for line in held_lines(found):
            held[_payment(line.ext_id)].append(line)
        for e in payments:
            e.held = held.get(e.key, [])
    return not_checked


def _payment(ext_id: str) -> Key:
    _, tenant, payment, _n = ext_id.split(":", 3)
    return tenant, payment


@dataclass
class Report:
    verdict: LedgerVerdict
    gathered: Gathered
    not_checked: dict[str, str]
    since: datetime | None
    until: datetime

    @property
    def exit_code(self) -> int:
        if self.not_checked:
            return EXIT_UNFINISHED
        return EXIT_CLEAN if self.verdict.ok else EXIT_DIFFERENCES

    def as_json(self) -> dict[str, Any]:
        counts = self.verdict.counts()
        tenants = {
            t: {
                "payments": sum(c.values()),
                "findings": {str(f): n for f, n in sorted(c.items(), key=_by_severity)},
                "checked": t not in self.not_checked,
            }
            for t, c in sorted(counts.items())
        }
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat(),
            "oldest_event": _iso(self.gathered.oldest_event),
            "betalt_events": self.gathered.betalt_events,
            "payments": len(self.verdict.payments),
            "tenants": tenants,
            "differences": [
                {
                    "tenant_id": v.key[0],
                    "payment_id": v.key[1],
                    "finding": str(v.finding),
                    "findings": [str(f) for f in v.findings],
                    "outcome": v.outcome,
                    "details": list(v.details),
                }
                for v in self.verdict.differences()
                if v.key[0] not in self.not_checked
            ],
            "not_checked": dict(sorted(self.not_checked.items())),
            "exit_code": self.exit_code,
        }


def report_of(
    g: Gathered, not_checked: dict[str, str], since: datetime | None, until: datetime
) -> Report:
    """The verdict over the gathered evidence (operations: replays and resends allowed)."""
    return Report(ledger_verdict(g.evidence.values()), g, not_checked, since, until)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _by_severity(item: tuple[Finding, int]) -> int:
    return SEVERITY.index(item[0])


WORDS = {
    Finding.POSTED_ONCE: "posted once",
    Finding.REJECTED: "rejected",
    Finding.DEAD_LETTERED: "dead-lettered",
    Finding.NO_OUTCOME: "no outcome",
    Finding.RECEIPT_NOT_IN_XLEDGER: "receipt, but not in Xledger",
    Finding.IN_XLEDGER_WITHOUT_RECEIPT: "in Xledger, no receipt",
    Finding.IN_XLEDGER_TWICE: "in Xledger twice",
    Finding.DIFFERS: "differs from the submission",
    Finding.NOT_A_VOUCHER: "not two balanced lines",
    Finding.REJECTED_BUT_IN_XLEDGER: "rejected, but in Xledger",
    Finding.DEAD_LETTERED_BUT_IN_XLEDGER: "dead-lettered, but in Xledger",
    Finding.TWO_OUTCOMES: "two outcomes",
}

COLUMNS = (
    ("posted once", Finding.POSTED_ONCE),
    ("rejected", Finding.REJECTED),
    ("dead-lettered", Finding.DEAD_LETTERED),
)


def render(report: Report) -> str:
    """The table for people: per tenant, counts first; then each difference."""
    data = report.as_json()
    out = [
        f"Reconciliation of Betalt payments from {data['since'] or 'the first event'} to "
        f"{data['until']}: {data['payments']} payments ({data['betalt_events']} Betalt events)."
    ]
    oldest = report.gathered.oldest_event
    if report.since and oldest and oldest > report.since:
        out.append(
            f"Note: the payment-status topic holds nothing older than {data['oldest_event']} "
            f"({age(oldest)} ago): payments before that are not checked."
        )
    out.append("")
    header = f"{'tenant':<22}{'payments':>9}" + "".join(f"{c:>15}" for c, _ in COLUMNS)
    out.append(header + f"{'differences':>13}")
    for tenant, row in data["tenants"].items():
        found = row["findings"]
        ok = [found.get(str(f), 0) for _, f in COLUMNS]
        diff = row["payments"] - sum(ok) if row["checked"] else "not checked"
        cells = "".join(f"{n:>15}" for n in ok)
        out.append(f"{escape(tenant)[:21]:<22}{row['payments']:>9}{cells}{diff:>13}")
    if data["not_checked"]:
        out += ["", "Not checked:"]
        out += [f"  {escape(t)}: {escape(why)}" for t, why in data["not_checked"].items()]
    if data["differences"]:
        out += ["", "Differences (most serious first):"]
        for d in data["differences"]:
            words = ", ".join(WORDS[Finding(f)] for f in d["findings"])
            what = f" — {escape('; '.join(d['details']))}" if d["details"] else ""
            out.append(f"  {escape(d['tenant_id'])} {escape(d['payment_id'])}: {words}{what}")
    elif not data["not_checked"]:
        out += [
            "",
            "No differences: every Betalt payment has one outcome, and what was posted "
            "is in Xledger once, as submitted.",
        ]
    return "\n".join(out)


class Progress:
    """A line on standard error now and then, once a run has taken a while."""

    def __init__(self, quiet_for_s: float = 2.0, every_s: float = 5.0) -> None:
        self._start = time.monotonic()
        self._last = 0.0
        self._quiet_for_s = quiet_for_s
        self._every_s = every_s

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self._start < self._quiet_for_s or now - self._last < self._every_s:
            return
        self._last = now
        print(f"reconcile: {message}", file=sys.stderr, flush=True)


def reconcile_findings(report: Report) -> dict[str, dict[str, int]]:
    """tenant → finding → payments, every finding present (0 where none): the gauges of
    the last run, so that a difference that is gone reads 0, not stale."""
    out: dict[str, dict[str, int]] = {}
    for tenant, c in report.verdict.counts().items():
        if tenant in report.not_checked:
            continue
        out[tenant] = {str(f): c.get(f, 0) for f in Finding}
    return out
