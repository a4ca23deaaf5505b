"""Property tests of the core over generated valid snapshots and events (R14, R18, R9)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import BOTH_ROLES
from worker.contracts import PaymentStatusEvent, RegisterSnapshot
from worker.core import Enriched, Rejected, evaluate
from worker.core.register_index import RegisterIndex
from worker.core.snapshot_rules import check_snapshot

CATEGORIES = ["A", "B", "C", "D"]
TYPES = ["1", "1.1", "2", "2.1", "2.2", "3", "3.1", "4", "4.1", "8", "8.2", "8.3", "9.9"]
SOURCES = ["tilhorighet", "tiltak", "barn", "grupper"]
GROUPS = ["G1", "G2", "G3", "G4"]
DATES = ["2025-01-01", "2025-06-01", "2026-01-01", "2026-11-20", "2026-12-31"]


@st.composite
def snapshots(draw: st.DrawFn) -> dict[str, Any]:
    n2 = draw(st.integers(1, 3))
    units = [{"org_unit_id": "U", "level": 1, "parent_id": None}]
    for i in range(n2):
        units.append({"org_unit_id": f"U{i}", "level": 2, "parent_id": "U"})
        for j in range(draw(st.integers(0, 2))):
            units.append({"org_unit_id": f"U{i}.{j}", "level": 3, "parent_id": f"U{i}"})
    unit_ids = [u["org_unit_id"] for u in units]
    value = st.sampled_from(["V1", "V2", "V3"])
    valued_units = ["U", *draw(st.lists(st.sampled_from(unit_ids[1:]), unique=True))]
    tiltak = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "measure_types": st.lists(
                        st.sampled_from(TYPES), min_size=1, max_size=3, unique=True
                    ),
                    "org_unit_ids": st.lists(
                        st.sampled_from(unit_ids), min_size=1, max_size=2, unique=True
                    ),
                    "value": value,
                }
            ),
            max_size=5,
        )
    )
    children = draw(st.lists(st.sampled_from(["B1", "B2", "B3"]), unique=True))
    dims = [
        {"position": 1, "name": "Konto", "sources": ["betalingstype"], "xledger_field": "account"}
    ]
    fields = ["glObject1", "glObject2", "project", "glObject3"]
    for pos in range(2, 2 + draw(st.integers(0, 4))):
        dims.append(
            {
                "position": pos,
                "name": f"D{pos}",
                "xledger_field": fields[pos - 2],
                "sources": draw(
                    st.lists(st.sampled_from(SOURCES), min_size=1, max_size=3, unique=True)
                ),
                "required": draw(st.booleans()),
            }
        )
    codes = draw(st.sampled_from([[], ["0", "1"]]))
    return {
        "schema_version": 1,
        "tenant_id": "t",
        "version": 1,
        "published_at": "2026-11-01T00:00:00+00:00",
        "published_by": {"user_id": "u", "roles": BOTH_ROLES},
        "settings": {
            "accounting_system": "Xledger",
            "url": "https://xledger.net/graphql",
            "counter_account": "1920",
            "token_ref": "t",
            "bank_account_pkey": draw(st.sampled_from([None, "77"])),
            "default_vat_code": draw(st.sampled_from([None, "0", "0"])),
        },
        "dimensions": dims,
        "registers": {
            # Mostly complete, so that postings are as common as rejections.
            "betalingstype": [
                {"category": c, "value": f"A{c}"} for c in CATEGORIES[: draw(st.integers(2, 4))]
            ],
            "tilhorighet": {
                "units": units,
                "values": [{"org_unit_id": u, "value": draw(value)} for u in valued_units],
            },
            "tiltak": tiltak,
            "barn": [{"child_id": c, "value": f"P-{c}"} for c in children],
            "grupper": [
                {"group_id": g, "value": draw(value)}
                for g in draw(st.lists(st.sampled_from(GROUPS), unique=True))
            ],
            "mva": {
                "codes": codes,
                "by_category": [
                    {"category": c, "code": "1"}
                    for c in draw(st.lists(st.sampled_from(CATEGORIES), unique=True))
                ]
                if codes
                else [],
            },
        },
    }


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    measures = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "measure_id": st.sampled_from(["M1", "M2", "M3", "M4"]),
                    "type": st.sampled_from(TYPES),
                    "start": st.sampled_from(DATES),
                    "end": st.sampled_from([None, *DATES]),
                }
            ),
            max_size=4,
            unique_by=lambda m: m["measure_id"],
        )
    )
    cents = draw(st.integers(1, 10**11))
    return {
        "schema_version": 1,
        "event_id": "e",
        "occurred_at": "2026-11-20T10:00:00+01:00",
        "tenant_id": "t",
        "payment_id": "p",
        "status": "Betalt",
        "payment": {
            "amount": f"{Decimal(cents) / 100:.2f}",
            "currency": "NOK",
            "payment_date": "2026-11-20",
            "category": draw(st.sampled_from([*CATEGORIES, "ZZ"])),
            "vat_code": draw(st.sampled_from([None, None, "0", "7"])),
            "child_id": draw(st.sampled_from(["B1", "B2", "B9"])),
            "org_unit_id": draw(st.sampled_from(["U", "U0", "U0.0", "U0.1", "U1", "U1.1", "X"])),
            "measure_id": draw(st.sampled_from([None, "M1", "M2", "M9"])),
        },
        "child": {
            "measures": measures,
            "group_ids": draw(st.lists(st.sampled_from([*GROUPS, "G-none"]), unique=True)),
        },
    }


def _index(d: dict[str, Any]) -> RegisterIndex:
    snap = RegisterSnapshot.model_validate(d)
    assert check_snapshot(snap) == []
    return RegisterIndex(snap)


def _outcome(result: Enriched | Rejected) -> Any:
    if isinstance(result, Enriched):
        return ("posted", result.dimensions, result.vat_code, result.lines)
    return ("rejected", [(p.code, p.position, p.message) for p in result.problems])


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(snapshots(), events())
def test_r14_every_valid_pair_gets_exactly_one_outcome(snap: dict, ev: dict) -> None:
    result = evaluate(PaymentStatusEvent.model_validate(ev), _index(snap))
    assert isinstance(result, Enriched) != isinstance(result, Rejected)
    if isinstance(result, Rejected):
        assert result.problems
        assert result.reason == result.problems[0].code
        positions = [p.position for p in result.problems if p.position is not None]
        assert positions == sorted(positions)  # R15: position order …
        tail = [p.position for p in result.problems]
        assert None not in tail[: len(positions)]  # … VAT last


@PROPS
@given(snapshots(), events())
def test_r18_every_submission_balances_to_zero(snap: dict, ev: dict) -> None:
    event = PaymentStatusEvent.model_validate(ev)
    result = evaluate(event, _index(snap))
    if isinstance(result, Enriched):
        expense, counter = result.lines
        assert expense.amount + counter.amount == 0
        assert expense.amount == event.payment.amount
        assert result.dimensions["1"] == expense.account


@PROPS
@given(snapshots(), events(), st.randoms(use_true_random=False))
def test_r9_result_does_not_depend_on_register_or_measure_order(
    snap: dict, ev: dict, rnd: Any
) -> None:
    shuffled = {**snap, "registers": {**snap["registers"]}}
    regs = shuffled["registers"]
    for key in ("betalingstype", "barn", "grupper"):
        regs[key] = rnd.sample(regs[key], len(regs[key]))
    regs["tiltak"] = [
        {
            **e,
            "measure_types": rnd.sample(e["measure_types"], len(e["measure_types"])),
            "org_unit_ids": rnd.sample(e["org_unit_ids"], len(e["org_unit_ids"])),
        }
        for e in rnd.sample(regs["tiltak"], len(regs["tiltak"]))
    ]
    t = regs["tilhorighet"]
    regs["tilhorighet"] = {
        "units": rnd.sample(t["units"], len(t["units"])),
        "values": rnd.sample(t["values"], len(t["values"])),
    }
    regs["mva"] = {
        **regs["mva"],
        "by_category": rnd.sample(regs["mva"]["by_category"], len(regs["mva"]["by_category"])),
    }
    shuffled["dimensions"] = rnd.sample(snap["dimensions"], len(snap["dimensions"]))
    ev2 = {
        **ev,
        "child": {
            **ev["child"],
            "measures": rnd.sample(ev["child"]["measures"], len(ev["child"]["measures"])),
            "group_ids": rnd.sample(ev["child"]["group_ids"], len(ev["child"]["group_ids"])),
        },
    }
    a = evaluate(PaymentStatusEvent.model_validate(ev), _index(snap))
    b = evaluate(PaymentStatusEvent.model_validate(ev2), _index(shuffled))
    assert _outcome(a) == _outcome(b)
