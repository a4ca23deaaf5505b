"""What a draft register snapshot would do, before anyone publishes it.

The draft is judged as the worker would judge it (R1–R13 against the snapshot in force)
and then used, with the core's own `evaluate`, on two sets of payments of its tenant:

- its waiting rejections: which would now post (R16 would post them as soon as the draft
  is published) and which would still fail, with the draft's problems;
- its recent Betalt payments: whose accounting string (the dimension values, the VAT
  code) would differ from what the snapshot in force gives, and which would start to fail.

Posted payments are not posted again by a new snapshot; their lines show what the same
kind of payment would get from now on. Nothing is published or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.contracts import PaymentStatusEvent, ProblemCode, RegisterSnapshot
from worker.core import Enriched, RegisterIndex, Rejected, check_snapshot, evaluate
from worker.core.endpoints import UrlPolicy
from worker.core.snapshot_record import refusal_text
from worker.ops.rejections import Key, RejectedPayment, original_event
from worker.ops.topic_reader import Record


def accounting(result: Enriched) -> dict[str, str]:
    """The accounting string: dimension positions and the VAT code."""
    return {**{f"dim{k}": v for k, v in sorted(result.dimensions.items())}, "vat": result.vat_code}


def problems(result: Rejected) -> list[dict[str, Any]]:
    return [
        {"code": str(p.code), "position": p.position, "message": p.message} for p in result.problems
    ]


@dataclass
class Outcome:
    tenant_id: str
    payment_id: str
    event_id: str
    before: dict[str, Any]  # the outcome under the snapshot in force
    after: dict[str, Any]  # under the draft

    def to_json(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "event_id": self.event_id,
            "now": self.before,
            "draft": self.after,
        }


def _outcome(result: Enriched | Rejected) -> dict[str, Any]:
    if isinstance(result, Enriched):
        return {"outcome": "posts", "accounting": accounting(result)}
    return {"outcome": "rejected", "problems": problems(result)}


@dataclass
class WhatIf:
    tenant_id: str
    draft_version: int
    in_force_version: int | None
    refusals: list[str]  # why the worker would refuse the draft (empty: it would accept it)
    would_post: list[Outcome] = field(default_factory=list)  # waiting → posts
    still_failing: list[Outcome] = field(default_factory=list)  # waiting → still rejected
    waiting_without_event: list[str] = field(default_factory=list)
    # Waiting because Xledger refused the posting: R16 sends them again once the draft is
    # published, but with an unchanged string Xledger will most likely refuse them again.
    xledger_refused: list[Outcome] = field(default_factory=list)
    changed: list[Outcome] = field(default_factory=list)  # recent: a different string
    newly_failing: list[Outcome] = field(default_factory=list)  # recent: posts now, not then
    newly_posting: list[Outcome] = field(default_factory=list)  # recent: fails now, posts then
    unchanged: int = 0
    recent: int = 0
    evaluated: bool = True  # False: the draft breaks R1–R12, nothing was evaluated

    @property
    def accepted(self) -> bool:
        return not self.refusals

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "draft_version": self.draft_version,
            "in_force_version": self.in_force_version,
            "draft_accepted": self.accepted,
            "refusals": self.refusals,
            "evaluated": self.evaluated,
            "waiting": {
                "would_post": [o.to_json() for o in self.would_post],
                "still_failing": [o.to_json() for o in self.still_failing],
                "event_not_found": self.waiting_without_event,
                "refused_by_xledger": [o.to_json() for o in self.xledger_refused],
            },
            "recent": {
                "evaluated": self.recent,
                "unchanged": self.unchanged,
                "accounting_changed": [o.to_json() for o in self.changed],
                "would_fail": [o.to_json() for o in self.newly_failing],
                "would_post": [o.to_json() for o in self.newly_posting],
            },
        }


def what_if(
    draft: RegisterSnapshot,
    in_force: RegisterIndex | None,
    waiting: list[RejectedPayment],
    events: dict[Key, list[tuple[Record, PaymentStatusEvent]]],
    recent: int,
    policy: UrlPolicy | None = None,
) -> WhatIf:
    """The draft's effect on its tenant's waiting rejections and its `recent` newest
    Betalt payments. Pure: the caller reads the topics."""
    previous = in_force.snapshot if in_force else None
    found_refusals = check_snapshot(draft, previous, policy)
    refusals = [refusal_text(r) for r in found_refusals]
    report = WhatIf(
        draft.tenant_id, draft.version, in_force.version if in_force else None, refusals
    )
    if any(r.rule != "R13" for r in found_refusals):
        # Registers that break R1–R12 cannot be evaluated meaningfully: fix them first.
        report.evaluated = False
        return report
    # Refused only for R13 (its version or its publisher's roles): the registers themselves
    # are sound, so what they would do is shown, beside what to fix before publishing.
    draft_index = RegisterIndex(draft)
    waiting_keys: set[Key] = set()
    for p in waiting:
        waiting_keys.add((p.tenant_id, p.payment_id))
        found = original_event(events, p)
        if found is None:
            report.waiting_without_event.append(p.payment_id)
            continue
        _, event = found
        before = _outcome(evaluate(event, in_force))
        after_result = evaluate(event, draft_index)
        outcome = Outcome(p.tenant_id, p.payment_id, event.event_id, before, _outcome(after_result))
        if p.latest.reason == ProblemCode.XLEDGER_REFUSED:
            report.xledger_refused.append(outcome)
        elif isinstance(after_result, Enriched):
            report.would_post.append(outcome)
        else:
            report.still_failing.append(outcome)
    # The newest Betalt event of each payment of the tenant, newest payments first.
    latest = [
        found[-1]
        for key, found in events.items()
        if key[0] == draft.tenant_id and key not in waiting_keys and found
    ]
    latest.sort(key=lambda pair: pair[0].timestamp_ms, reverse=True)
    for _, event in latest[:recent]:
        report.recent += 1
        before_r, after_r = evaluate(event, in_force), evaluate(event, draft_index)
        outcome = Outcome(
            event.tenant_id, event.payment_id, event.event_id, _outcome(before_r), _outcome(after_r)
        )
        if isinstance(before_r, Enriched) and isinstance(after_r, Enriched):
            if accounting(before_r) == accounting(after_r):
                report.unchanged += 1
            else:
                report.changed.append(outcome)
        elif isinstance(before_r, Enriched):
            report.newly_failing.append(outcome)
        elif isinstance(after_r, Enriched):
            report.newly_posting.append(outcome)
        else:
            report.unchanged += 1
    return report
