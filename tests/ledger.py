"""What the integration tests ask of Xledger's ledger at the end (R14, R18), by the one
ledger verdict (`worker/core/ledger_verdict.py`): every posted payment is in it once, as
one balanced voucher of the two lines 1 and 2, and nothing else is."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from worker.core.ledger_verdict import Evidence, Key, Outcome, OutcomeKind, ledger_verdict
from worker.devenv.sandbox import held_lines, lines_by_payment


def assert_ledger_exactly_once(rows: Iterable[Mapping[str, Any]], posted: set[Key]) -> None:
    """`rows`: the sandbox's ledger (or a demo's --ledger-out); `posted`: the payments with
    a receipt."""
    held = held_lines(rows)
    by_payment = lines_by_payment(held)
    evidence = [
        Evidence(key, [Outcome(OutcomeKind.RECEIPT, 0)], held=by_payment.get(key, []))
        for key in posted
    ]
    verdict = ledger_verdict(evidence, held, strict=True)
    problems = [f"{v.key}: {v.finding}: {'; '.join(v.details)}" for v in verdict.differences()]
    problems += [
        f"no posted payment's line: {x.ext_id} (dbId {x.db_id})" for x in verdict.strangers
    ]
    assert not problems, problems[:20]
