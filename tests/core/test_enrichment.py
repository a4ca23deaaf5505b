"""The enrichment core, rule by rule (domain.md R6–R12, R15, R18)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.factories import event, event_dict, index, patch, snapshot_dict
from worker.contracts import ProblemCode
from worker.core import Enriched, Rejected, evaluate


def enriched(ev=None, snap=None) -> Enriched:
    result = evaluate(ev or event(), index(snap))
    assert isinstance(result, Enriched), getattr(result, "problems", result)
    return result


def rejected(ev=None, snap=None) -> Rejected:
    result = evaluate(ev or event(), index(snap))
    assert isinstance(result, Rejected), result
    return result


def codes(result: Rejected) -> list[tuple[ProblemCode, int | None]]:
    return [(p.code, p.position) for p in result.problems]


def with_measures(*measures: dict, groups: list[str] | None = None, **payment) -> object:
    d = event_dict()
    d["child"] = {"measures": list(measures), "group_ids": groups or []}
    d["payment"].update(payment)
    return event(d)


def m(measure_id: str, type_: str, start: str = "2026-01-01", end: str | None = None) -> dict:
    return {"measure_id": measure_id, "type": type_, "start": start, "end": end}


# --- the whole string -------------------------------------------------------------------


def test_contract_example_yields_full_accounting_string() -> None:
    r = enriched()
    assert r.dimensions == {"1": "10890", "2": "3100", "4": "251"}
    assert r.vat_code == "0"
    assert r.snapshot_version == 1


def test_unknown_tenant_is_rejected_without_snapshot() -> None:
    r = evaluate(event(), None)
    assert isinstance(r, Rejected)
    assert codes(r) == [(ProblemCode.UNKNOWN_TENANT, None)]
    assert r.snapshot_version is None
    assert r.rejection(event(), None).retryable  # R16: a snapshot arriving later cures it


# --- R7 Betalingstyper --------------------------------------------------------------------


def test_r7_category_gives_account_in_position_1() -> None:
    r = enriched(event(category="BARNEHAGE"))
    assert r.dimensions["1"] == "13700"
    assert r.lines[0].account == "13700"


def test_r7_category_missing_from_register_is_missing_account() -> None:
    r = rejected(event(category="REISEUTGIFTER"))
    assert codes(r) == [(ProblemCode.MISSING_ACCOUNT, 1)]
    assert "REISEUTGIFTER" in r.problems[0].message
    assert "Betalingstyper" in r.problems[0].message


# --- R8 Tilhørighet -------------------------------------------------------------------------


def test_r8_unit_with_own_value_uses_it() -> None:
    assert enriched(event(org_unit_id="E-32")).dimensions["2"] == "3120"


def test_r8_level3_inherits_from_its_level2() -> None:
    assert enriched(event(org_unit_id="E-31")).dimensions["2"] == "3100"


def test_r8_level2_without_value_inherits_from_service_owner() -> None:
    # K2 has no value of its own; E-41 is under K2: both inherit the IKS (level 1) value.
    ev = with_measures(m("T-55", "2.1"), org_unit_id="E-41")
    assert enriched(ev).dimensions["2"] == "3000"


def test_r8_single_ansvar_on_service_owner_is_enough() -> None:
    s = patch(
        snapshot_dict(), "registers.tilhorighet.values", [{"org_unit_id": "IKS", "value": "9"}]
    )
    assert enriched(event(org_unit_id="E-32"), s).dimensions["2"] == "9"


def test_r8_unit_not_in_structure_is_unknown_org_unit_for_every_dimension_using_it() -> None:
    r = rejected(event(org_unit_id="E-99"))
    assert codes(r) == [(ProblemCode.UNKNOWN_ORG_UNIT, 2), (ProblemCode.UNKNOWN_ORG_UNIT, 4)]
    assert "E-99" in r.problems[0].message


def test_r8_no_value_anywhere_in_chain_is_missing_dimension_value() -> None:
    s = patch(
        snapshot_dict(), "registers.tilhorighet.values", [{"org_unit_id": "K1", "value": "1"}]
    )
    r = rejected(event(org_unit_id="E-41"), s)
    assert codes(r) == [(ProblemCode.MISSING_DIMENSION_VALUE, 2)]


# --- R9 Tiltak --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measure_type", "unit", "expected"),
    [
        ("1.1", "E-31", "252"),  # placement types + municipality 1
        ("2.2", "K1", "252"),
        ("8.2", "E-32", "252"),
        ("2.1", "E-41", "2520"),  # placement types + municipality 2
        ("3.1", "E-31", "251"),  # other measure types + municipality 1
        ("4.1", "E-41", "2510"),  # other measure types + municipality 2
        ("8.3", "K2", "2510"),  # 8 matches 8.3; 8.2 does not
    ],
)
def test_r9_iks_example_from_the_guide(measure_type: str, unit: str, expected: str) -> None:
    ev = with_measures(m("T-55", measure_type), org_unit_id=unit)
    assert enriched(ev).dimensions["4"] == expected


def test_r9_placement_measure_governs_kindergarten_payment() -> None:
    # The guide's example: foster home + kindergarten; the kindergarten payment takes
    # Tjeneste/Funksjon from the foster-home measure.
    ev = with_measures(m("T-55", "4.1"), m("T-12", "2.2", start="2025-06-01"), category="BARNEHAGE")
    assert enriched(ev).dimensions["4"] == "252"


def test_r9_placement_governs_only_while_active_ended_placement_does_not() -> None:
    ev = with_measures(m("T-55", "4.1"), m("T-12", "2.2", start="2025-06-01", end="2026-11-19"))
    assert enriched(ev).dimensions["4"] == "251"


def test_r9_placement_not_yet_started_does_not_govern() -> None:
    ev = with_measures(m("T-55", "4.1"), m("T-12", "2.2", start="2026-11-21"))
    assert enriched(ev).dimensions["4"] == "251"


def test_r9_active_includes_start_and_end_day() -> None:
    on_start = with_measures(m("T-55", "4.1"), m("T-12", "2.2", start="2026-11-20"))
    on_end = with_measures(m("T-55", "4.1"), m("T-12", "2.2", start="2025-01-01", end="2026-11-20"))
    assert enriched(on_start).dimensions["4"] == "252"
    assert enriched(on_end).dimensions["4"] == "252"


def test_r9_several_active_placements_latest_start_governs() -> None:
    s = patch(
        snapshot_dict(),
        "registers.tiltak",
        [
            {"measure_types": ["1"], "org_unit_ids": ["K1"], "value": "INST"},
            {"measure_types": ["2"], "org_unit_ids": ["K1"], "value": "FOST"},
            {"measure_types": ["4"], "org_unit_ids": ["K1"], "value": "BHG"},
        ],
    )
    ev = with_measures(
        m("T-55", "4.1"), m("A", "1.1", start="2025-01-01"), m("B", "2.1", start="2026-03-01")
    )
    assert enriched(ev, s).dimensions["4"] == "FOST"


def test_r9_equal_starts_smallest_measure_id_governs() -> None:
    s = patch(
        snapshot_dict(),
        "registers.tiltak",
        [
            {"measure_types": ["1"], "org_unit_ids": ["K1"], "value": "INST"},
            {"measure_types": ["2"], "org_unit_ids": ["K1"], "value": "FOST"},
        ],
    )
    ev = with_measures(m("T-9", "1.1", start="2026-03-01"), m("T-10", "2.1", start="2026-03-01"))
    # "T-10" < "T-9" as strings: the smallest measure_id is T-10, a foster home.
    assert enriched(ev, s).dimensions["4"] == "FOST"


def test_r9_dotted_type_matches_its_prefix_but_not_a_sibling() -> None:
    s = patch(
        snapshot_dict(),
        "registers.tiltak",
        [
            {"measure_types": ["8.2"], "org_unit_ids": ["K1"], "value": "BOLIG"},
        ],
    )
    assert enriched(with_measures(m("T-55", "8.2.1")), s).dimensions["4"] == "BOLIG"
    r = rejected(with_measures(m("T-55", "8.3")), s)
    assert codes(r) == [(ProblemCode.MISSING_DIMENSION_VALUE, 4)]


def test_r9_most_specific_type_wins_over_deeper_unit() -> None:
    s = patch(
        snapshot_dict(),
        "registers.tiltak",
        [
            {"measure_types": ["4"], "org_unit_ids": ["E-31"], "value": "GENERAL-DEEP"},
            {"measure_types": ["4.1"], "org_unit_ids": ["IKS"], "value": "SPECIFIC-TOP"},
        ],
    )
    assert enriched(with_measures(m("T-55", "4.1")), s).dimensions["4"] == "SPECIFIC-TOP"


def test_r9_equal_specificity_deepest_unit_wins() -> None:
    s = patch(
        snapshot_dict(),
        "registers.tiltak",
        [
            {"measure_types": ["4"], "org_unit_ids": ["IKS"], "value": "TOP"},
            {"measure_types": ["4"], "org_unit_ids": ["K1"], "value": "MID"},
        ],
    )
    assert enriched(with_measures(m("T-55", "4.1")), s).dimensions["4"] == "MID"


def test_r9_entry_for_another_branch_does_not_match() -> None:
    s = patch(
        snapshot_dict(),
        "registers.tiltak",
        [
            {"measure_types": ["4"], "org_unit_ids": ["K2"], "value": "K2"},
        ],
    )
    r = rejected(with_measures(m("T-55", "4.1")), s)
    assert codes(r) == [(ProblemCode.MISSING_DIMENSION_VALUE, 4)]


def test_r9_tie_between_different_values_is_ambiguous() -> None:
    s = patch(
        snapshot_dict(),
        "registers.tiltak",
        [
            {"measure_types": ["4"], "org_unit_ids": ["K1"], "value": "251"},
            {"measure_types": ["4", "5"], "org_unit_ids": ["K1"], "value": "2519"},
        ],
    )
    r = rejected(with_measures(m("T-55", "4.1")), s)
    assert codes(r) == [(ProblemCode.AMBIGUOUS_REGISTER, 4)]
    assert "251" in r.problems[0].message and "2519" in r.problems[0].message


def test_r9_tie_between_equal_values_is_not_ambiguous() -> None:
    s = patch(
        snapshot_dict(),
        "registers.tiltak",
        [
            {"measure_types": ["4"], "org_unit_ids": ["K1"], "value": "251"},
            {"measure_types": ["4", "5"], "org_unit_ids": ["K1"], "value": "251"},
        ],
    )
    assert enriched(with_measures(m("T-55", "4.1")), s).dimensions["4"] == "251"


def test_r9_payment_measure_unknown_to_child_gives_no_value() -> None:
    ev = with_measures(m("T-1", "4.1"), measure_id="T-404")
    assert codes(rejected(ev)) == [(ProblemCode.MISSING_DIMENSION_VALUE, 4)]


def test_r9_no_measure_at_all_gives_no_value() -> None:
    ev = with_measures(measure_id=None)
    assert codes(rejected(ev)) == [(ProblemCode.MISSING_DIMENSION_VALUE, 4)]


def test_r9_ended_own_measure_still_governs_a_late_payment() -> None:
    ev = with_measures(m("T-55", "4.1", start="2025-01-01", end="2026-06-30"))
    assert enriched(ev).dimensions["4"] == "251"


# --- R10 Barn and R6 source order ---------------------------------------------------------


def test_r10_child_in_barn_register_gets_its_own_value() -> None:
    d = event_dict()
    d["payment"]["child_id"] = "B-2002"
    assert enriched(event(d)).dimensions["3"] == "P-REFUSJON-7"


def test_r6_first_source_that_yields_wins() -> None:
    d = event_dict()
    d["payment"]["child_id"] = "B-2002"  # Barn yields first, before Grupper
    d["child"]["group_ids"] = ["G-7"]
    assert enriched(event(d)).dimensions["3"] == "P-REFUSJON-7"


def test_r6_later_source_used_when_earlier_yields_nothing() -> None:
    d = event_dict()
    d["child"]["group_ids"] = ["G-7"]
    assert enriched(event(d)).dimensions["3"] == "PR-44"


def test_r6_optional_position_without_value_is_left_out() -> None:
    r = enriched()
    assert "3" not in r.dimensions
    assert r.lines[0].project is None


def test_r6_required_position_without_value_is_rejected() -> None:
    s = patch(snapshot_dict(), "dimensions.2.required", True)
    r = rejected(event(), s)
    assert codes(r) == [(ProblemCode.MISSING_DIMENSION_VALUE, 3)]
    assert "Barn, Grupper" in r.problems[0].message


def test_r6_each_value_lands_in_its_xledger_field() -> None:
    d = event_dict()
    d["child"]["group_ids"] = ["G-7"]
    expense = enriched(event(d)).lines[0]
    assert (expense.account, expense.glObject1, expense.project, expense.glObject2) == (
        "10890",
        "3100",
        "PR-44",
        "251",
    )


# --- R11 Grupper ------------------------------------------------------------------------


def test_r11_child_in_two_valued_groups_is_group_conflict() -> None:
    d = event_dict()
    d["child"]["group_ids"] = ["G-8", "G-7"]
    r = rejected(event(d))
    assert codes(r) == [(ProblemCode.GROUP_CONFLICT, 3)]
    assert r.problems[0].message == (
        "Barnet er med i flere grupper som har verdi (G-7, G-8). Betalingen er ikke overført."
    )


def test_r11_conflict_even_when_the_values_are_equal() -> None:
    s = patch(
        snapshot_dict(),
        "registers.grupper",
        [
            {"group_id": "G-7", "value": "PR-44"},
            {"group_id": "G-8", "value": "PR-44"},
        ],
    )
    d = event_dict()
    d["child"]["group_ids"] = ["G-7", "G-8"]
    assert codes(rejected(event(d), s)) == [(ProblemCode.GROUP_CONFLICT, 3)]


def test_r11_conflict_even_when_an_earlier_source_gives_the_value() -> None:
    d = event_dict()
    d["payment"]["child_id"] = "B-2002"
    d["child"]["group_ids"] = ["G-7", "G-8"]
    assert codes(rejected(event(d))) == [(ProblemCode.GROUP_CONFLICT, 3)]


def test_r11_many_groups_are_fine_when_at_most_one_has_a_value() -> None:
    d = event_dict()
    d["child"]["group_ids"] = ["G-1", "G-7", "G-FAG"]
    assert enriched(event(d)).dimensions["3"] == "PR-44"


def test_r11_applies_only_where_a_dimension_uses_grupper() -> None:
    s = patch(snapshot_dict(), "dimensions.2.sources", ["barn"])
    d = event_dict()
    d["child"]["group_ids"] = ["G-7", "G-8"]
    assert isinstance(evaluate(event(d), index(s)), Enriched)


# --- R12 MVA-kode ----------------------------------------------------------------------------


def test_r12_payment_own_vat_code_comes_first() -> None:
    assert enriched(event(vat_code="13", category="KJOP_TJENESTER")).vat_code == "13"


def test_r12_register_code_for_category_comes_second() -> None:
    assert enriched(event(category="KJOP_TJENESTER")).vat_code == "1"


def test_r12_tenant_default_comes_last() -> None:
    r = enriched(event(category="BARNEHAGE"))
    assert r.vat_code == "0"
    assert r.lines[0].taxRule == "0"


def test_r12_no_code_anywhere_is_missing_vat_code() -> None:
    s = patch(snapshot_dict(), "settings.default_vat_code", None)
    assert codes(rejected(event(), s)) == [(ProblemCode.MISSING_VAT_CODE, None)]


def test_r12_code_outside_the_tenant_list_is_unknown_vat_code() -> None:
    r = rejected(event(vat_code="25"))
    assert codes(r) == [(ProblemCode.UNKNOWN_VAT_CODE, None)]
    assert "25" in r.problems[0].message


def test_r12_empty_code_list_accepts_any_code() -> None:
    s = patch(snapshot_dict(), "registers.mva.codes", [])
    assert enriched(event(vat_code="25"), s).vat_code == "25"


# --- R15 all problems, in position order, VAT last ----------------------------------------


def test_r15_rejection_lists_every_problem_in_position_order_vat_last() -> None:
    d = event_dict()
    d["payment"].update(category="REISEUTGIFTER", org_unit_id="E-99", vat_code="25")
    d["child"]["group_ids"] = ["G-7", "G-8"]
    r = rejected(event(d))
    assert codes(r) == [
        (ProblemCode.MISSING_ACCOUNT, 1),
        (ProblemCode.UNKNOWN_ORG_UNIT, 2),
        (ProblemCode.GROUP_CONFLICT, 3),
        (ProblemCode.UNKNOWN_ORG_UNIT, 4),
        (ProblemCode.UNKNOWN_VAT_CODE, None),
    ]
    assert r.reason is ProblemCode.MISSING_ACCOUNT
    assert all(p.message.endswith("Betalingen er ikke overført.") for p in r.problems)


def test_r16_register_problems_are_retryable() -> None:
    ev = event(category="REISEUTGIFTER")
    assert rejected(ev).rejection(ev, None).retryable


# --- R18 the voucher -------------------------------------------------------------------


def test_r18_two_balanced_lines_with_counter_account_and_bank_pkey() -> None:
    expense, counter = enriched().lines
    assert expense.amount == Decimal("17210.00")
    assert counter.amount == Decimal("-17210.00")
    assert expense.amount + counter.amount == 0
    assert counter.account == "1920"
    assert counter.bankAccountRef == "884412"
    assert expense.bankAccountRef is None
    assert counter.taxRule is None and counter.glObject1 is None


def test_r18_both_lines_share_date_text_currency_and_stable_identifiers() -> None:
    expense, counter = enriched().lines
    for line in (expense, counter):
        assert str(line.postedDate) == "2026-11-20"
        assert line.text == "Fosterhjemsgodtgjørelse november"
        assert line.currency == "NOK"
    assert expense.extIdentifier == "flyt:t-test:P-2026-000123:1"
    assert counter.extIdentifier == "flyt:t-test:P-2026-000123:2"
    assert enriched().lines == (expense, counter)  # same payment, same identifiers


def test_r18_bank_pkey_left_out_when_not_set() -> None:
    s = patch(snapshot_dict(), "settings.bank_account_pkey", None)
    assert enriched(event(), s).lines[1].bankAccountRef is None


def test_r18_missing_text_gets_a_default() -> None:
    assert enriched(event(text=None)).lines[0].text == "Flyt betaling P-2026-000123"


def test_submission_record_validates_against_its_model() -> None:
    from datetime import UTC, datetime

    from worker.contracts import Submission

    ev = event()
    sub = enriched(ev).submission(ev, datetime(2026, 11, 20, tzinfo=UTC))
    again = Submission.model_validate_json(sub.model_dump_json())
    assert again == sub


def test_core_voucher_line_and_wire_gl_line_have_the_same_fields() -> None:
    from worker.contracts import GLLine
    from worker.core.posting import VoucherLine

    assert list(VoucherLine._fields) == list(GLLine.model_fields)  # a named tuple's fields
    line = enriched().lines[1]
    assert GLLine.model_validate(line.to_json()).model_dump(mode="json", exclude_none=True) == (
        line.to_json()
    )
