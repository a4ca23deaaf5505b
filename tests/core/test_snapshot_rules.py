"""Snapshot refusals (R1–R13): every reason, and every problem listed at once."""

from __future__ import annotations

import pytest

from tests.factories import patch, snapshot_dict
from worker.contracts import RegisterSnapshot
from worker.core.endpoints import UrlPolicy
from worker.core.register_book import RegisterBook
from worker.core.snapshot_rules import check_snapshot


def refusal_codes(
    d: dict, previous: dict | None = None, policy: UrlPolicy | None = None
) -> list[str]:
    prev = RegisterSnapshot.model_validate(previous) if previous else None
    return [r.code for r in check_snapshot(RegisterSnapshot.model_validate(d), prev, policy)]


UNITS = "registers.tilhorighet.units"


def test_valid_snapshot_has_no_refusals() -> None:
    assert refusal_codes(snapshot_dict()) == []


def test_r1_accounting_system_must_be_xledger() -> None:
    assert refusal_codes(patch(snapshot_dict(), "settings.accounting_system", "Visma")) == [
        "ACCOUNTING_SYSTEM_NOT_XLEDGER"
    ]


@pytest.mark.parametrize("url", ["https://www.xledger.net/graphql", "https://xledger.net/graphql"])
def test_r2_production_urls_are_allowed(url: str) -> None:
    assert refusal_codes(patch(snapshot_dict(), "settings.url", url)) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/graphql",
        "http://www.xledger.net/graphql",
        "https://www.xledger.net/graphql/",
        "https://www.xledger.net.evil.example/graphql",
    ],
)
def test_r2_other_urls_are_refused(url: str) -> None:
    assert refusal_codes(patch(snapshot_dict(), "settings.url", url)) == ["URL_NOT_ALLOWED"]


def test_r2_demo_host_only_for_a_test_tenant() -> None:
    demo = patch(snapshot_dict(), "settings.url", "https://demo.xledger.net/graphql")
    assert refusal_codes(demo) == ["URL_NOT_ALLOWED"]
    assert refusal_codes(patch(demo, "test_tenant", True)) == []


def test_r2_sandbox_url_only_in_sandbox_mode() -> None:
    local = patch(snapshot_dict(), "settings.url", "http://127.0.0.1:8099/graphql")
    assert refusal_codes(local) == ["URL_NOT_ALLOWED"]
    assert refusal_codes(local, policy=UrlPolicy(allow_sandbox=True)) == []
    remote = patch(snapshot_dict(), "settings.url", "http://10.0.0.5:8099/graphql")
    assert refusal_codes(remote, policy=UrlPolicy(allow_sandbox=True)) == ["URL_NOT_ALLOWED"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("dimensions.0.sources", ["tilhorighet"]),
        ("dimensions.0.sources", ["betalingstype", "barn"]),
        ("dimensions.0.xledger_field", "glObject3"),
        ("dimensions.0.required", False),
        ("dimensions.0.position", 5),
    ],
)
def test_r6_position_1_must_be_betalingstype_to_account(path: str, value: object) -> None:
    assert "POSITION_1_NOT_BETALINGSTYPE" in refusal_codes(patch(snapshot_dict(), path, value))


def test_r6_duplicate_position_and_field() -> None:
    d = patch(snapshot_dict(), "dimensions.3.position", 2)
    d = patch(d, "dimensions.3.xledger_field", "glObject1")
    assert refusal_codes(d) == ["DUPLICATE_POSITION", "DUPLICATE_XLEDGER_FIELD"]


def test_r6_account_and_betalingstype_only_in_position_1() -> None:
    d = patch(snapshot_dict(), "dimensions.1.xledger_field", "account")
    assert "ACCOUNT_OUTSIDE_POSITION_1" in refusal_codes(d)
    d = patch(snapshot_dict(), "dimensions.1.sources", ["betalingstype"])
    assert refusal_codes(d) == ["BETALINGSTYPE_OUTSIDE_POSITION_1"]


def test_r7_duplicate_category() -> None:
    d = patch(snapshot_dict(), "registers.betalingstype.1.category", "FOSTERHJEM_GODTGJORELSE")
    assert refusal_codes(d) == ["DUPLICATE_CATEGORY"]


def test_r7_one_account_may_serve_many_categories() -> None:
    d = patch(snapshot_dict(), "registers.betalingstype.1.value", "10890")
    assert refusal_codes(d) == []


def test_r8_duplicate_unit() -> None:
    d = patch(snapshot_dict(), f"{UNITS}.5.org_unit_id", "E-32")
    assert "DUPLICATE_UNIT" in refusal_codes(d)


def test_r8_missing_parent() -> None:
    d = patch(snapshot_dict(), f"{UNITS}.3.parent_id", "K9")
    assert refusal_codes(d) == ["UNIT_PARENT_MISSING"]


def test_r8_level_that_does_not_match_its_parent() -> None:
    assert refusal_codes(patch(snapshot_dict(), f"{UNITS}.3.level", 2)) == ["UNIT_LEVEL_MISMATCH"]
    # a unit below level 1 with no parent
    d = patch(snapshot_dict(), f"{UNITS}.1.parent_id", None)
    assert refusal_codes(d) == ["UNIT_LEVEL_MISMATCH"]


def test_r8_cycle() -> None:
    d = patch(snapshot_dict(), f"{UNITS}.1.parent_id", "E-31")  # K1 → E-31 → K1
    codes = refusal_codes(d)
    assert "UNIT_CYCLE" in codes
    assert codes.count("UNIT_CYCLE") == 1


def test_r8_value_for_unknown_unit_and_duplicate_value() -> None:
    d = patch(snapshot_dict(), "registers.tilhorighet.values.2.org_unit_id", "X-1")
    assert refusal_codes(d) == ["UNIT_VALUE_UNKNOWN_UNIT"]
    d = patch(snapshot_dict(), "registers.tilhorighet.values.2.org_unit_id", "K1")
    assert refusal_codes(d) == ["DUPLICATE_UNIT_VALUE"]


def test_r9_tiltak_with_unknown_unit_or_bad_type() -> None:
    d = patch(snapshot_dict(), "registers.tiltak.0.org_unit_ids", ["K9"])
    assert refusal_codes(d) == ["TILTAK_UNKNOWN_UNIT"]
    d = patch(snapshot_dict(), "registers.tiltak.0.measure_types", ["2", "fosterhjem"])
    assert refusal_codes(d) == ["TILTAK_BAD_TYPE"]


def test_r10_one_barn_value_on_two_children() -> None:
    d = patch(
        snapshot_dict(),
        "registers.barn",
        [
            {"child_id": "B-1", "value": "P-1"},
            {"child_id": "B-2", "value": "P-1"},
        ],
    )
    refusals = check_snapshot(RegisterSnapshot.model_validate(d))
    assert [r.code for r in refusals] == ["BARN_VALUE_ON_TWO_CHILDREN"]
    assert "B-1, B-2" in refusals[0].message


def test_r10_child_twice_in_barn() -> None:
    d = patch(
        snapshot_dict(),
        "registers.barn",
        [
            {"child_id": "B-1", "value": "P-1"},
            {"child_id": "B-1", "value": "P-2"},
        ],
    )
    assert refusal_codes(d) == ["DUPLICATE_CHILD"]


def test_r11_duplicate_group_but_shared_value_is_fine() -> None:
    d = patch(snapshot_dict(), "registers.grupper.1.group_id", "G-7")
    assert refusal_codes(d) == ["DUPLICATE_GROUP"]
    d = patch(snapshot_dict(), "registers.grupper.1.value", "PR-44")
    assert refusal_codes(d) == []


def test_r12_mva_codes_must_be_consistent() -> None:
    d = patch(snapshot_dict(), "registers.mva.by_category.0.code", "99")
    assert refusal_codes(d) == ["MVA_CODE_NOT_IN_CODES"]
    d = patch(snapshot_dict(), "settings.default_vat_code", "99")
    assert refusal_codes(d) == ["MVA_CODE_NOT_IN_CODES"]
    d = patch(
        snapshot_dict(),
        "registers.mva.by_category",
        [
            {"category": "A", "code": "0"},
            {"category": "A", "code": "1"},
        ],
    )
    assert refusal_codes(d) == ["DUPLICATE_MVA_CATEGORY"]


def test_r13_first_snapshot_needs_both_roles() -> None:
    for roles in (["Innstillinger"], ["Økonomiinnstillinger"], []):
        d = patch(snapshot_dict(), "published_by.roles", roles)
        assert "PUBLISHER_LACKS_ROLE" in refusal_codes(d), roles


def test_r13_settings_change_needs_innstillinger() -> None:
    prev = snapshot_dict()
    d = patch(patch(prev, "version", 2), "settings.counter_account", "1921")
    d = patch(d, "published_by.roles", ["Økonomiinnstillinger"])
    assert refusal_codes(d, prev) == ["PUBLISHER_LACKS_ROLE"]
    assert refusal_codes(patch(d, "published_by.roles", ["Innstillinger"]), prev) == []


def test_r13_register_change_needs_okonomiinnstillinger() -> None:
    prev = snapshot_dict()
    d = patch(patch(prev, "version", 2), "registers.barn", [])
    assert refusal_codes(patch(d, "published_by.roles", ["Innstillinger"]), prev) == [
        "PUBLISHER_LACKS_ROLE"
    ]
    assert refusal_codes(patch(d, "published_by.roles", ["Økonomiinnstillinger"]), prev) == []


def test_older_or_equal_version_is_refused() -> None:
    prev = patch(snapshot_dict(), "version", 5)
    assert refusal_codes(patch(prev, "version", 5), prev) == ["STALE_VERSION"]
    assert refusal_codes(patch(prev, "version", 4), prev) == ["STALE_VERSION"]


def test_every_problem_is_listed_not_just_the_first() -> None:
    d = patch(snapshot_dict(), "settings.accounting_system", "Visma")
    d = patch(d, "settings.url", "https://evil.example/graphql")
    d = patch(d, "registers.grupper.1.group_id", "G-7")
    d = patch(d, f"{UNITS}.3.parent_id", "K9")
    assert refusal_codes(d) == [
        "ACCOUNTING_SYSTEM_NOT_XLEDGER",
        "URL_NOT_ALLOWED",
        "UNIT_PARENT_MISSING",
        "DUPLICATE_GROUP",
    ]


def test_refused_snapshot_leaves_previous_in_force() -> None:
    book = RegisterBook()
    assert book.offer(RegisterSnapshot.model_validate(snapshot_dict())).accepted
    bad = patch(
        patch(snapshot_dict(), "version", 2),
        "registers.barn",
        [
            {"child_id": "B-1", "value": "P"},
            {"child_id": "B-2", "value": "P"},
        ],
    )
    offer = book.offer(RegisterSnapshot.model_validate(bad))
    assert not offer.accepted and offer.refusals
    assert book.version("t-test") == 1
