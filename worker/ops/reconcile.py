"""`worker reconcile`: the month-end proof. For every Betalt payment of a period, its outcome
on the topics and its vouchers in Xledger, judged by the one ledger verdict
(`worker/core/ledger_verdict.py`).

1. stream the topics (assigned partitions, no consumer group: `topic_reader.scan`): the
   Betalt events of the period, and the receipts, rejections, dead letters and
   submissions from its start on; a topic whose retention has deleted records of the
   period makes the run `incomplete` (exit 6: what is missing is named);
2. each payment is looked up where it was posted: the URL and token reference its
   receipt names, else (no receipt, or an older one without them) the snapshot in force
   (read as the worker reads it); through the client's read-only lookup with details
   (both staging and the journal, paced as posting is, each token its own);
3. the verdict per payment, counted per tenant; a table for people, JSON for machines.

Nothing is written anywhere: Xledger is only read, the topics are only read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
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
from worker.ops.when import Period, age
from worker.xledger.client import LOOKUP_IDS_PER_REQUEST, Target, XledgerClient
from worker.xledger.errors import LookupFailed
from worker.xledger.wire import DETAIL_NAMES, Lookup, posting_nodes

EXIT_CLEAN = 0
EXIT_UNFINISHED = 1
EXIT_DIFFERENCES = 5
EXIT_INCOMPLETE = 6
# Outcomes and submissions are read from this long before the period's start: a producer's
# clock may run behind the one that stamped the Betalt event.
OUTCOME_SLACK = timedelta(hours=1)

Say = Callable[[str], None]


@dataclass
class Gathered:
    """What the topics say about the period's Betalt payments."""

    evidence: dict[Key, Evidence] = field(default_factory=dict)
    betalt_events: int = 0  # Betalt events in the period (a payment may have several)
    oldest_event: datetime | None = None  # the payment-status topic's oldest record
    # tenant → where and as whom to look its payments up, or why that cannot be done
    targets: dict[str, Target | str] = field(default_factory=dict)
    # payment → (URL, token reference) its newest receipt names: where it was posted
    posted_at: dict[Key, tuple[str, str]] = field(default_factory=dict)
    # what the topics no longer hold of the period (retention): the run is incomplete
    missing: list[str] = field(default_factory=list)


def gather(
    records: Mapping[str, Iterable[Record]],
    topics: Topics,
    *,
    period: Period | None = None,
    tenants: Collection[str] = (),
) -> Gathered:
    """The evidence per Betalt payment whose event arrived within the period (broker time,
    as the other operator commands count), of `tenants` or all. The topics may be streamed:
    the payment-status topic is read first, the others only keep what names its payments."""
    period = period or Period()
    g = Gathered()
    for r in records.get(topics.payments, []):
        if g.oldest_event is None or r.at < g.oldest_event:
            g.oldest_event = r.at
        key = _betalt(r)
        if key is None or (tenants and key[0] not in tenants):
            continue
        if not period.contains(r.at):
            continue
        g.betalt_events += 1
        g.evidence.setdefault(key, Evidence(key))
    for r in records.get(topics.receipts, []):
        _note(g, r, OutcomeKind.RECEIPT, "")
        body = r.json() or {}
        key = _key_of(body)
        url, ref = body.get("xledger_url"), body.get("token_ref")
        if key in g.evidence and isinstance(url, str) and isinstance(ref, str):
            g.posted_at[key] = (url, ref)
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
    history = read_in_force(list(records.get(topics.registers, [])))
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
    def text(name: str) -> str | None:
        value = line.get(name)
        return None if value is None else str(value)

    return replace(
        Line(
            str(line.get("extIdentifier")),
            line.get("account"),
            _decimal(line.get("amount")),
            line.get("postedDate"),
        ),
        **_fields({name: text(name) for name in DETAIL_NAMES}),
    )


def _fields(values: dict[str, str | None]) -> dict[str, Any]:
    """The posted fields beyond account, amount and date, by their Xledger names."""
    return values


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
            line = Line(ext_id, n.account, n.amount, n.posted_date, n.db_id)
            if n.details is not None:
                line = replace(line, detailed=True, **_fields(dict(n.details)))
            out.append(line)
    return out


def _where(g: Gathered, key: Key) -> Target | str:
    """Where to look a payment up: its receipt's URL and token, else the snapshot in force."""
    in_force = g.targets.get(key[0]) or "no register snapshot"
    posted = g.posted_at.get(key)
    if posted is None:
        return in_force
    test = in_force.test_tenant if isinstance(in_force, Target) else False
    return Target(key[0], posted[0], posted[1], test)


async def look_up(client: XledgerClient, g: Gathered, say: Say) -> dict[str, str]:
    """Each payment looked up in Xledger where it was posted, into its evidence; returns
    the tenants that could not (all) be checked, and why."""
    not_checked: dict[str, str] = {}
    by_target: dict[Target, list[Evidence]] = defaultdict(list)
    for e in g.evidence.values():
        where = _where(g, e.key)
        if isinstance(where, Target):
            by_target[where].append(e)
        else:
            not_checked[e.key[0]] = where
    for n, (target, payments) in enumerate(
        sorted(by_target.items(), key=lambda x: (x[0].tenant_id, x[0].url, x[0].token_ref)),
        start=1,
    ):
        tenant = target.tenant_id
        ids = [f"flyt:{t}:{p}:{i}" for t, p in (e.key for e in payments) for i in (1, 2)]
        found = Lookup()
        try:
            for start in range(0, len(ids), LOOKUP_IDS_PER_REQUEST):
                chunk = ids[start : start + LOOKUP_IDS_PER_REQUEST]
                found.nodes += (await client.lookup(target, chunk, details=True)).nodes
                done = min(len(ids), start + len(chunk)) // 2
                say(f"target {n}/{len(by_target)} {tenant}: {done}/{len(payments)} payments")
        except LookupFailed as exc:
            not_checked[tenant] = f"Xledger could not be asked at {target.url}: {exc}"
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
        """1 could not finish; 5 differences (even in an incomplete period: what was found
        is wrong money); 6 incomplete (never 0 for a period the topics do not cover)."""
        if self.not_checked:
            return EXIT_UNFINISHED
        if not self.verdict.ok:
            return EXIT_DIFFERENCES
        return EXIT_INCOMPLETE if self.gathered.missing else EXIT_CLEAN

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
            "incomplete": self.gathered.missing,
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
    if data["incomplete"]:
        out += ["", "INCOMPLETE: the topics no longer hold all of the period (retention):"]
        out += [f"  {escape(m)}" for m in data["incomplete"]]
    if data["not_checked"]:
        out += ["", "Not checked:"]
        out += [f"  {escape(t)}: {escape(why)}" for t, why in data["not_checked"].items()]
    if data["differences"]:
        out += ["", "Differences (most serious first):"]
        for d in data["differences"]:
            words = ", ".join(WORDS[Finding(f)] for f in d["findings"])
            what = f" — {escape('; '.join(d['details']))}" if d["details"] else ""
            out.append(f"  {escape(d['tenant_id'])} {escape(d['payment_id'])}: {words}{what}")
    elif not data["not_checked"] and not data["incomplete"]:
        out += [
            "",
            "No differences: every Betalt payment has one outcome, and what was posted "
            "is in Xledger once, as submitted.",
        ]
    return "\n".join(out)


def reconcile_findings(report: Report) -> dict[str, dict[str, int]]:
    """tenant → finding → payments, every finding present (0 where none): the gauges of
    the last run, so that a difference that is gone reads 0, not stale."""
    out: dict[str, dict[str, int]] = {}
    for tenant, c in report.verdict.counts().items():
        if tenant in report.not_checked:
            continue
        out[tenant] = {str(f): c.get(f, 0) for f in Finding}
    return out
