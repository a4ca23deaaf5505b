"""The campaign's verdict: the one ledger verdict (`worker/core/ledger_verdict.py`, strict:
nothing is replayed or resent in a campaign) over every Betalt payment's outcomes and the
sandbox's ledger, sorted into what the summary counts; beside it, what the pure core
expects of each payment, and how long the flow took to recover from a kill."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.contracts import DlqReason, ProblemCode
from worker.core.ledger_verdict import (
    Evidence,
    Finding,
    Key,
    Outcome,
    OutcomeKind,
    PaymentVerdict,
    ledger_verdict,
)
from worker.demo.chaos.faults import Kill
from worker.devenv.sandbox import held_lines, lines_by_payment

# Placed where the summary counts them; a payment is in one of them at most.
_DOUBLES = (
    Finding.IN_XLEDGER_TWICE,
    Finding.REJECTED_BUT_IN_XLEDGER,
    Finding.DEAD_LETTERED_BUT_IN_XLEDGER,
)


@dataclass
class Verdict:
    """Every Betalt payment's one outcome, and every way R14 or R18 is broken."""

    posted: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    lost: list[str] = field(default_factory=list)
    lost_keys: list[Key] = field(default_factory=list)
    # In Xledger twice, or in Xledger (or with a receipt) and another outcome besides.
    double_posted: list[str] = field(default_factory=list)
    # Two outcomes, neither a posting (rejected and dead-lettered): R14 says exactly one.
    conflicting: list[str] = field(default_factory=list)
    # R18: a voucher that is not two balanced lines, or lines of no Betalt payment.
    ledger_problems: list[str] = field(default_factory=list)
    # An outcome the core would not give (a payment it rejects posted, or one it posts
    # rejected for another reason than an Xledger refusal).
    unexpected: list[str] = field(default_factory=list)
    posted_without_receipt: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.double_posted
            or self.conflicting
            or self.ledger_problems
            or self.unexpected
        )


def check_r14(
    betalt: set[Key],
    core_rejects: set[Key],
    receipts: Mapping[Key, int],
    rejections: Mapping[Key, list[str]],
    dead_letters: Mapping[Key, list[str]],
    ledger: list[dict[str, Any]],
) -> Verdict:
    """R14 and R18 over one campaign, by the ledger verdict: each Betalt payment ends
    posted once, rejected, or dead-lettered, and in only one of them. Xledger's ledger
    (the sandbox's dump) is the truth for "posted"; the topics for the other two. A line
    in Xledger without a receipt still counts as posted (`posted_without_receipt`)."""
    held = held_lines(ledger)
    by_payment = lines_by_payment(held)
    evidence = [
        Evidence(
            key,
            [Outcome(OutcomeKind.RECEIPT, 0)] * receipts.get(key, 0)
            + [Outcome(OutcomeKind.REJECTION, 0, r) for r in rejections.get(key, [])]
            + [Outcome(OutcomeKind.DEAD_LETTER, 0, r) for r in dead_letters.get(key, [])],
            held=by_payment.get(key, []),
        )
        for key in sorted(betalt)
    ]
    judged = ledger_verdict(evidence, held, strict=True)
    v = Verdict()
    for line in judged.strangers:
        v.ledger_problems.append(f"line {line.db_id}: {line.ext_id!r}")
    for e in evidence:
        _count(v, e, judged.payments[e.key], core_rejects, rejections, dead_letters)
    return v


def _count(
    v: Verdict,
    e: Evidence,
    pv: PaymentVerdict,
    core_rejects: set[Key],
    rejections: Mapping[Key, list[str]],
    dead_letters: Mapping[Key, list[str]],
) -> None:
    """One payment's verdict, where the summary counts it."""
    name = f"{e.key[0]} {e.key[1]}"
    found = set(pv.findings)
    two = Finding.TWO_OUTCOMES in found

    def line(finding: Finding) -> str:
        return f"{name}: {finding}: {'; '.join(pv.details)}"

    if Finding.NO_OUTCOME in found or (Finding.RECEIPT_NOT_IN_XLEDGER in found and not two):
        v.lost.append(f"{name}: {pv.details[0] if pv.details else 'no outcome'}")
        v.lost_keys.append(e.key)
        return
    doubles = [f for f in _DOUBLES if f in found]
    receipt = any(o.kind is OutcomeKind.RECEIPT for o in e.outcomes)
    if doubles:
        v.double_posted.append(line(doubles[0]))
    elif two and (e.held or receipt):
        v.double_posted.append(line(Finding.TWO_OUTCOMES))
    elif two:
        v.conflicting.append(line(Finding.TWO_OUTCOMES))
    if Finding.NOT_A_VOUCHER in found:
        v.ledger_problems.append(line(Finding.NOT_A_VOUCHER))
    if e.held:
        v.posted += 1
        v.posted_without_receipt += not receipt
        if e.key in core_rejects:
            v.unexpected.append(f"{name}: posted, but the core rejects it")
    elif rejections.get(e.key) or DlqReason.REFUSED in dead_letters.get(e.key, []):
        v.rejected += 1
        other = [r for r in rejections.get(e.key, []) if r != ProblemCode.XLEDGER_REFUSED]
        if e.key not in core_rejects and other:
            v.unexpected.append(f"{name}: rejected ({', '.join(other)}), the core posts it")
    else:
        v.dead_lettered += 1


def expected_outcomes(
    snapshots: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[set[Key], set[Key]]:
    """(submitted, rejected) Betalt payments as the pure core decides them offline."""
    from worker.contracts import RegisterSnapshot
    from worker.core.register_book import RegisterBook
    from worker.offline import enrich_lines

    book = RegisterBook()
    for snap in sorted(snapshots, key=lambda d: (d["tenant_id"], d["version"])):
        book.offer(RegisterSnapshot.model_validate(snap))
    submitted: set[Key] = set()
    rejected: set[Key] = set()
    for out in enrich_lines([json.dumps(e) for e in events], book):
        key = (out["tenant_id"], out["payment_id"])
        if out["outcome"] == "submission":
            submitted.add(key)
        elif out["outcome"] == "rejection":
            rejected.add(key)
    return submitted, rejected


def recovery(kills: list[Kill], receipts: list[tuple[float, str]]) -> tuple[float | None, ...]:
    """(longest kill → next receipt, longest kill → next receipt of the tenant whose batch
    was cut), in seconds; kills after the last receipt have no recovery to measure."""
    times = sorted(receipts)
    worst: float | None = None
    worst_tenant: float | None = None
    for k in kills:
        nxt = next((t for t, _ in times if t >= k.at), None)
        if nxt is not None:
            worst = max(worst or 0.0, nxt - k.at)
        if k.tenant is not None:
            mine = next((t for t, tenant in times if t >= k.at and tenant == k.tenant), None)
            if mine is not None:
                worst_tenant = max(worst_tenant or 0.0, mine - k.at)
    r = (worst, worst_tenant)
    return tuple(None if x is None else round(x, 2) for x in r)


def ranges(offsets: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] → "0-2 5 7-8"."""
    out: list[str] = []
    run: list[int] = []
    for x in sorted(set(offsets)):
        if run and x != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(x)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return " ".join(out)


def submission_map(
    topic: str, positions: Mapping[Key, list[str]], lost: set[Key], betalt: set[Key]
) -> str:
    """Per submissions partition, the offsets of lost payments beside those with an
    outcome: a block of lost offsets is a commit past what was never posted."""
    by_part: dict[int, dict[bool, list[int]]] = defaultdict(lambda: {True: [], False: []})
    for key in betalt:
        for where in positions.get(key, []):
            name, _, rest = where.partition(":")
            if name != topic:
                continue
            partition, _, offset = rest.partition("@")
            by_part[int(partition)][key in lost].append(int(offset))
    lines = ["submission offsets, lost | with an outcome:"]
    for part in sorted(by_part):
        seen = by_part[part]
        lines.append(f"  {topic}:{part} lost {ranges(seen[True])} | ok {ranges(seen[False])}")
    return "\n".join(lines)


def reasons(by_payment: Mapping[Key, list[str]], betalt: set[Key]) -> dict[str, int]:
    """How many Betalt payments got each reason (once per payment and reason)."""
    counts = Counter(r for key, rs in by_payment.items() if key in betalt for r in set(rs))
    return dict(sorted(counts.items()))
