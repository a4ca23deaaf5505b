"""One ledger verdict (R14, R18): for each Betalt payment, its outcomes on the topics and the
lines Xledger holds of it, judged the same way wherever it is asked: by `worker
reconcile` (month-end proof), and meant for the chaos campaign and the integration tests
(issue 22: one verdict, not three).

Pure: plain data in, findings out; no Kafka, no HTTP, no clock.

- R14: every Betalt payment ends in exactly one outcome: posted once, rejected, or
  dead-lettered. Xledger is the truth for "posted" (a receipt without lines in Xledger
  posted nothing); the topics are the truth for the other two.
- R18: a posting is one voucher of two lines (n = 1 the expense line, n = 2 the counter
  line) that balance, each external identifier `flyt:{tenant}:{payment}:{n}` held once,
  with every field the payment was submitted with (account, amount, date, currency, text,
  taxRule, glObject1–5, project, bankAccountRef).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from worker.contracts import DlqReason, ProblemCode

Key = tuple[str, str]  # (tenant_id, payment_id)

REFUSED_REASON = ProblemCode.XLEDGER_REFUSED  # the rejection an Xledger refusal becomes
# Before issue 10 an Xledger refusal also wrote a DLQ record with this reason: together
# with its XLEDGER_REFUSED rejection it is one outcome, rejected.
LEGACY_REFUSED_DLQ = DlqReason.REFUSED


class OutcomeKind(StrEnum):
    RECEIPT = "receipt"
    REJECTION = "rejection"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One outcome record on a topic: a receipt, a rejection, or a dead letter."""

    kind: OutcomeKind
    at_ms: int  # the record's broker time: orders a payment's outcomes
    reason: str = ""  # a rejection's reason, a dead letter's dlq.reason


@dataclass(frozen=True, slots=True)
class Line:
    """A GL line: as submitted (expected), or one posting of it in Xledger (held), with
    every field that was posted (R18), in Xledger's names."""

    ext_id: str
    account: str | None = None
    amount: Decimal | None = None
    posted_date: str | None = None  # ISO date
    db_id: int | None = None
    currency: str | None = None
    text: str | None = None
    taxRule: str | None = None
    glObject1: str | None = None
    glObject2: str | None = None
    glObject3: str | None = None
    glObject4: str | None = None
    glObject5: str | None = None
    project: str | None = None
    bankAccountRef: str | None = None
    # A held line read with every field (a lookup with details): an empty field there is
    # Xledger's answer, to be compared; without, only what it carries is compared.
    detailed: bool = False


@dataclass
class Evidence:
    """What is known of one Betalt payment."""

    key: Key
    outcomes: list[Outcome] = field(default_factory=list)
    # Each submission's lines: any of them may be what was posted (a payment is submitted
    # again after a re-evaluation, R16, R18).
    submitted: list[list[Line]] = field(default_factory=list)
    # One Line per posting Xledger holds of the payment's lines: a line posted twice is
    # here twice.
    held: list[Line] = field(default_factory=list)


class Finding(StrEnum):
    POSTED_ONCE = "posted_once"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"
    NO_OUTCOME = "no_outcome"
    RECEIPT_NOT_IN_XLEDGER = "receipt_not_in_xledger"
    IN_XLEDGER_WITHOUT_RECEIPT = "in_xledger_without_receipt"
    IN_XLEDGER_TWICE = "in_xledger_twice"
    DIFFERS = "differs"  # account, amount or date in Xledger is not what was submitted
    NOT_A_VOUCHER = "not_a_voucher"  # not the two lines 1 and 2, or they do not balance
    REJECTED_BUT_IN_XLEDGER = "rejected_but_in_xledger"
    DEAD_LETTERED_BUT_IN_XLEDGER = "dead_lettered_but_in_xledger"
    TWO_OUTCOMES = "two_outcomes"


CLEAN = frozenset({Finding.POSTED_ONCE, Finding.REJECTED, Finding.DEAD_LETTERED})
# In the order a person should read them: money in Xledger wrong first.
SEVERITY = (
    Finding.IN_XLEDGER_TWICE,
    Finding.REJECTED_BUT_IN_XLEDGER,
    Finding.DEAD_LETTERED_BUT_IN_XLEDGER,
    Finding.RECEIPT_NOT_IN_XLEDGER,
    Finding.NOT_A_VOUCHER,
    Finding.DIFFERS,
    Finding.TWO_OUTCOMES,
    Finding.IN_XLEDGER_WITHOUT_RECEIPT,
    Finding.NO_OUTCOME,
    Finding.POSTED_ONCE,
    Finding.REJECTED,
    Finding.DEAD_LETTERED,
)


@dataclass(frozen=True)
class PaymentVerdict:
    key: Key
    outcome: str  # "posted", "rejected", "dead_lettered" or "none": the one in force
    findings: tuple[Finding, ...]  # most serious first; one of CLEAN when all is well
    details: tuple[str, ...] = ()  # what differs, in words

    @property
    def finding(self) -> Finding:
        return self.findings[0]

    @property
    def ok(self) -> bool:
        return self.finding in CLEAN


def ext_identifier_parts(ext_id: str) -> tuple[Key, str] | None:
    """`flyt:{tenant}:{payment}:{n}` → ((tenant, payment), n) (contracts.md, R18)."""
    parts = ext_id.split(":")
    if len(parts) != 4 or parts[0] != "flyt":
        return None
    return (parts[1], parts[2]), parts[3]


def judge(e: Evidence, *, strict: bool = False) -> PaymentVerdict:
    """One payment's verdict.

    The outcome in force: posted when a receipt exists; else the latest of its rejections
    and dead letters. With `strict` (a campaign, where nothing is replayed or resent) any
    two outcomes of different kinds are TWO_OUTCOMES; without it (operations), an
    outcome followed by a receipt was superseded (a resend or a replay that posted, R13,
    R16), but one that follows a receipt is TWO_OUTCOMES.
    """
    findings: list[Finding] = []
    details: list[str] = []
    outcome = _outcome_in_force(e.outcomes, strict, findings, details)
    in_xledger = bool(e.held)
    if in_xledger:
        _check_voucher(e, findings, details)
    if outcome == "posted":
        if not in_xledger:
            findings.append(Finding.RECEIPT_NOT_IN_XLEDGER)
            details.append("a receipt, but no line in Xledger")
        else:
            _compare(e, findings, details)
    elif outcome == "rejected" and in_xledger:
        findings.append(Finding.REJECTED_BUT_IN_XLEDGER)
        details.append(f"rejected ({_reasons(e, OutcomeKind.REJECTION)}), yet in Xledger")
    elif outcome == "dead_lettered" and in_xledger:
        findings.append(Finding.DEAD_LETTERED_BUT_IN_XLEDGER)
        details.append(f"dead-lettered ({_reasons(e, OutcomeKind.DEAD_LETTER)}), yet in Xledger")
    elif outcome == "none":
        findings.append(Finding.IN_XLEDGER_WITHOUT_RECEIPT if in_xledger else Finding.NO_OUTCOME)
        if in_xledger:
            details.append("in Xledger, but no receipt")
    if not findings:
        clean = {
            "posted": Finding.POSTED_ONCE,
            "rejected": Finding.REJECTED,
            "dead_lettered": Finding.DEAD_LETTERED,
        }
        findings.append(clean[outcome])
    ordered = tuple(sorted(dict.fromkeys(findings), key=SEVERITY.index))
    return PaymentVerdict(e.key, outcome, ordered, tuple(details))


def _outcome_in_force(
    outcomes: Sequence[Outcome], strict: bool, findings: list[Finding], details: list[str]
) -> str:
    refused = any(o.kind is OutcomeKind.REJECTION and o.reason == REFUSED_REASON for o in outcomes)
    kept = [
        o
        for o in sorted(outcomes, key=lambda o: o.at_ms)
        if not (refused and o.kind is OutcomeKind.DEAD_LETTER and o.reason == LEGACY_REFUSED_DLQ)
    ]
    if not kept:
        return "none"
    kinds = [o.kind for o in kept]
    if strict and len(set(kinds)) > 1:
        findings.append(Finding.TWO_OUTCOMES)
        details.append(" and ".join(sorted({_word(k) for k in kinds})))
    if OutcomeKind.RECEIPT in kinds:
        last_receipt = max(i for i, k in enumerate(kinds) if k is OutcomeKind.RECEIPT)
        later = {_word(k) for k in kinds[last_receipt + 1 :] if k is not OutcomeKind.RECEIPT}
        if later and not strict:
            findings.append(Finding.TWO_OUTCOMES)
            details.append(f"posted, then {' and '.join(sorted(later))}")
        return "posted"
    return _word(kinds[-1])


def _word(kind: OutcomeKind) -> str:
    return {
        OutcomeKind.RECEIPT: "posted",
        OutcomeKind.REJECTION: "rejected",
        OutcomeKind.DEAD_LETTER: "dead_lettered",
    }[kind]


def _reasons(e: Evidence, kind: OutcomeKind) -> str:
    return ", ".join(dict.fromkeys(o.reason for o in e.outcomes if o.kind is kind)) or "?"


def _check_voucher(e: Evidence, findings: list[Finding], details: list[str]) -> None:
    """R18 in Xledger: each line once, the lines 1 and 2, balancing."""
    counts = Counter(line.ext_id for line in e.held)
    twice = sorted(ext for ext, n in counts.items() if n > 1)
    if twice:
        findings.append(Finding.IN_XLEDGER_TWICE)
        for ext in twice:
            ids = sorted(x.db_id for x in e.held if x.ext_id == ext and x.db_id is not None)
            where = f" (dbIds {', '.join(map(str, ids))})" if ids else ""
            details.append(f"{ext} {counts[ext]} times{where}")
    numbers = sorted({(ext_identifier_parts(x) or (e.key, "?"))[1] for x in counts})
    if numbers != ["1", "2"]:
        findings.append(Finding.NOT_A_VOUCHER)
        details.append(f"lines {', '.join(numbers)} in Xledger, not the two lines 1 and 2")
        return
    first = {ext: next(x for x in e.held if x.ext_id == ext) for ext in counts}
    amounts = [x.amount for x in first.values()]
    if all(a is not None for a in amounts) and sum(a for a in amounts if a is not None) != 0:
        findings.append(Finding.NOT_A_VOUCHER)
        details.append(f"unbalanced: the lines sum to {sum(a for a in amounts if a is not None)}")


# Every posted field (R18): the first three are always asked; the others need `detailed`.
_COMPARED = (
    ("account", "account"),
    ("amount", "amount"),
    ("posted_date", "date"),
    ("currency", "currency"),
    ("text", "text"),
    ("taxRule", "taxRule"),
    ("glObject1", "glObject1"),
    ("glObject2", "glObject2"),
    ("glObject3", "glObject3"),
    ("glObject4", "glObject4"),
    ("glObject5", "glObject5"),
    ("project", "project"),
    ("bankAccountRef", "bankAccountRef"),
)


def _compare(e: Evidence, findings: list[Finding], details: list[str]) -> None:
    """The lines in Xledger against what was submitted: equal to one submission of it."""
    if not e.submitted:
        return  # nothing to compare with (a submission older than the topic holds)
    held = {x.ext_id: x for x in reversed(e.held)}  # the first posting of each line
    mismatches = [_mismatches(lines, held) for lines in e.submitted]
    if any(not m for m in mismatches):
        return
    findings.append(Finding.DIFFERS)
    details.extend(mismatches[-1])  # against the latest submission


def _mismatches(submitted: Sequence[Line], held: Mapping[str, Line]) -> list[str]:
    out = []
    for want in submitted:
        got = held.get(want.ext_id)
        if got is None:
            continue  # a missing line is NOT_A_VOUCHER's
        n = (ext_identifier_parts(want.ext_id) or ((want.ext_id, ""), "?"))[1]
        line = "counter line" if n == "2" else "line 1"
        for attr, word in _COMPARED:
            theirs, ours = getattr(got, attr), getattr(want, attr)
            if theirs == ours:
                continue
            if got.detailed or (theirs is not None and ours is not None):
                out.append(f"{line} {word}: {_shown(theirs)} in Xledger, {_shown(ours)} submitted")
    return out


def _shown(value: object) -> str:
    return "(none)" if value is None else str(value)


@dataclass
class LedgerVerdict:
    """Every payment's verdict, and what Xledger holds of no Betalt payment."""

    payments: dict[Key, PaymentVerdict] = field(default_factory=dict)
    strangers: list[Line] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.strangers and all(v.ok for v in self.payments.values())

    def differences(self) -> list[PaymentVerdict]:
        """The payments not clean, most serious first, then by tenant and payment."""
        bad = [v for v in self.payments.values() if not v.ok]
        return sorted(bad, key=lambda v: (SEVERITY.index(v.finding), v.key))

    def counts(self) -> dict[str, Counter[Finding]]:
        """tenant → how many of its payments have each (first) finding."""
        out: dict[str, Counter[Finding]] = defaultdict(Counter)
        for v in self.payments.values():
            out[v.key[0]][v.finding] += 1
        return dict(out)


def ledger_verdict(
    evidence: Iterable[Evidence], ledger: Iterable[Line] = (), *, strict: bool = False
) -> LedgerVerdict:
    """The verdict over many payments. `ledger` (optional) is every line Xledger holds
    where the caller can list them all (a sandbox's ledger): lines of no payment in
    `evidence` are strangers."""
    v = LedgerVerdict()
    for e in evidence:
        v.payments[e.key] = judge(e, strict=strict)
    for line in ledger:
        parts = ext_identifier_parts(line.ext_id)
        if parts is None or parts[0] not in v.payments:
            v.strangers.append(line)
    return v
