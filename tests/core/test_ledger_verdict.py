"""The one ledger verdict (worker/core/ledger_verdict.py): each way R14 and R18 can be broken,
on hand-made evidence."""

from __future__ import annotations

from decimal import Decimal

from worker.core.ledger_verdict import (
    Evidence,
    Finding,
    Key,
    Line,
    Outcome,
    OutcomeKind,
    judge,
    ledger_verdict,
)

A: Key = ("t-a", "P-1")


def lines(key: Key = A, amount: str = "100.00", account: str = "10890", db: int = 1) -> list[Line]:
    t, p = key
    return [
        Line(f"flyt:{t}:{p}:1", account, Decimal(amount), "2026-11-20", db),
        Line(f"flyt:{t}:{p}:2", "1920", -Decimal(amount), "2026-11-20", db + 1),
    ]


RECEIPT = Outcome(OutcomeKind.RECEIPT, 2000)


def test_posted_once_as_submitted_is_clean() -> None:
    v = judge(Evidence(A, [RECEIPT], [lines()], lines()))
    assert v.ok and v.findings == (Finding.POSTED_ONCE,) and v.outcome == "posted"


def test_a_receipt_posted_twice_is_still_one_posting() -> None:
    v = judge(Evidence(A, [RECEIPT, Outcome(OutcomeKind.RECEIPT, 3000)], [lines()], lines()))
    assert v.ok


def test_no_outcome_and_no_lines() -> None:
    assert judge(Evidence(A)).findings == (Finding.NO_OUTCOME,)


def test_a_receipt_without_lines_in_xledger() -> None:
    v = judge(Evidence(A, [RECEIPT], [lines()], []))
    assert v.findings == (Finding.RECEIPT_NOT_IN_XLEDGER,)


def test_in_xledger_without_any_outcome() -> None:
    v = judge(Evidence(A, [], [lines()], lines()))
    assert v.findings == (Finding.IN_XLEDGER_WITHOUT_RECEIPT,) and v.outcome == "none"


def test_in_xledger_twice_names_the_lines_and_their_db_ids() -> None:
    v = judge(Evidence(A, [RECEIPT], [lines()], lines() + lines(db=7)))
    assert v.findings == (Finding.IN_XLEDGER_TWICE,)
    assert v.details == (
        "flyt:t-a:P-1:1 2 times (dbIds 1, 7)",
        "flyt:t-a:P-1:2 2 times (dbIds 2, 8)",
    )


def test_amount_account_date_and_counter_line_that_differ_are_named() -> None:
    held = lines(amount="120.00", account="13700")
    held[1] = Line(held[1].ext_id, "1921", Decimal("-120.00"), "2026-11-21", 2)
    v = judge(Evidence(A, [RECEIPT], [lines()], held))
    assert v.findings == (Finding.DIFFERS,)
    assert v.details == (
        "line 1 account: 13700 in Xledger, 10890 submitted",
        "line 1 amount: 120.00 in Xledger, 100.00 submitted",
        "counter line account: 1921 in Xledger, 1920 submitted",
        "counter line amount: -120.00 in Xledger, -100.00 submitted",
        "counter line date: 2026-11-21 in Xledger, 2026-11-20 submitted",
    )


def test_matching_any_submission_of_the_payment_is_enough() -> None:
    # Submitted again after a re-evaluation (R16): either set of lines may be the posted one.
    v = judge(Evidence(A, [RECEIPT], [lines(amount="90.00"), lines()], lines()))
    assert v.ok


def test_half_a_voucher_and_an_unbalanced_one_are_not_vouchers() -> None:
    half = judge(Evidence(A, [RECEIPT], [lines()], lines()[:1]))
    assert half.findings == (Finding.NOT_A_VOUCHER,)
    unbalanced = lines()
    unbalanced[1] = Line(unbalanced[1].ext_id, "1920", Decimal("-99.00"), "2026-11-20", 2)
    v = judge(Evidence(A, [RECEIPT], [], unbalanced))
    assert Finding.NOT_A_VOUCHER in v.findings and "sum to 1.00" in v.details[0]


def test_rejected_or_dead_lettered_but_in_xledger() -> None:
    rejected = Outcome(OutcomeKind.REJECTION, 1000, "XLEDGER_REFUSED")
    v = judge(Evidence(A, [rejected], [lines()], lines()))
    assert v.findings == (Finding.REJECTED_BUT_IN_XLEDGER,)
    dead = Outcome(OutcomeKind.DEAD_LETTER, 1000, "unknown_outcome")
    v = judge(Evidence(A, [dead], [lines()], lines()))
    assert v.findings == (Finding.DEAD_LETTERED_BUT_IN_XLEDGER,)
    assert v.details == ("dead-lettered (unknown_outcome), yet in Xledger",)


def test_a_dead_letter_followed_by_a_receipt_was_replayed_in_operations_not_in_a_campaign() -> None:
    dead = Outcome(OutcomeKind.DEAD_LETTER, 1000, "transient")
    assert judge(Evidence(A, [dead, RECEIPT], [lines()], lines())).ok
    strict = judge(Evidence(A, [dead, RECEIPT], [lines()], lines()), strict=True)
    assert strict.findings == (Finding.TWO_OUTCOMES,)


def test_a_dead_letter_after_the_receipt_is_two_outcomes() -> None:
    dead = Outcome(OutcomeKind.DEAD_LETTER, 3000, "crash")
    v = judge(Evidence(A, [RECEIPT, dead], [lines()], lines()))
    assert v.findings == (Finding.TWO_OUTCOMES,) and v.details == ("posted, then dead_lettered",)


def test_a_refusal_with_its_legacy_dlq_record_is_one_outcome_rejected() -> None:
    outcomes = [
        Outcome(OutcomeKind.REJECTION, 1000, "XLEDGER_REFUSED"),
        Outcome(OutcomeKind.DEAD_LETTER, 1001, "refused"),
    ]
    v = judge(Evidence(A, outcomes), strict=True)
    assert v.ok and v.outcome == "rejected"


def test_the_verdict_over_a_ledger_counts_by_tenant_and_lists_strangers_and_the_worst_first() -> (
    None
):
    b: Key = ("t-b", "P-2")
    c: Key = ("t-b", "P-3")
    evidence = [
        Evidence(A, [RECEIPT], [lines()], lines()),
        Evidence(b, [RECEIPT], [lines(b)], []),
        Evidence(c, [RECEIPT], [lines(c)], lines(c) + lines(c, db=9)),
    ]
    stranger = Line("flyt:t-x:P-9:1", "1", Decimal(1))
    v = ledger_verdict(evidence, [*lines(), stranger])
    assert not v.ok and v.strangers == [stranger]
    assert [d.key for d in v.differences()] == [c, b]  # twice before a lost receipt
    assert v.counts() == {
        "t-a": {Finding.POSTED_ONCE: 1},
        "t-b": {Finding.IN_XLEDGER_TWICE: 1, Finding.RECEIPT_NOT_IN_XLEDGER: 1},
    }
