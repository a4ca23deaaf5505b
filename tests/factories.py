"""Builders for snapshots, events and submissions: a small valid base, changed per test
with `patch`; and the register gap (R16) a test makes of any Betalt event."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from worker.contracts import GLLine, PaymentStatusEvent, RegisterSnapshot, Submission
from worker.contracts.submission import ext_identifier
from worker.core.register_index import RegisterIndex
from worker.core.snapshot_rules import check_snapshot

BOTH_ROLES = ["Innstillinger", "Økonomiinnstillinger"]


def snapshot_dict(**overrides: Any) -> dict[str, Any]:
    """The contract's example snapshot, with an IKS structure of two municipalities (R9)."""
    base: dict[str, Any] = {
        "schema_version": 1,
        "tenant_id": "t-test",
        "version": 1,
        "published_at": "2026-11-19T08:00:00+01:00",
        "published_by": {"user_id": "u-17", "roles": list(BOTH_ROLES)},
        "test_tenant": False,
        "settings": {
            "accounting_system": "Xledger",
            "url": "https://www.xledger.net/graphql",
            "counter_account": "1920",
            "bank_account_pkey": "884412",
            "token_ref": "t-test",
            "default_vat_code": "0",
        },
        "dimensions": [
            {
                "position": 1,
                "name": "Konto",
                "sources": ["betalingstype"],
                "xledger_field": "account",
            },
            {
                "position": 2,
                "name": "Ansvar",
                "sources": ["tilhorighet"],
                "xledger_field": "glObject1",
            },
            {
                "position": 3,
                "name": "Prosjekt",
                "sources": ["barn", "grupper"],
                "xledger_field": "project",
                "required": False,
            },
            {
                "position": 4,
                "name": "Tjeneste/Funksjon",
                "sources": ["tiltak"],
                "xledger_field": "glObject2",
            },
        ],
        "registers": {
            "betalingstype": [
                {"category": "FOSTERHJEM_GODTGJORELSE", "value": "10890"},
                {"category": "BARNEHAGE", "value": "13700"},
                {"category": "KJOP_TJENESTER", "value": "13750"},
            ],
            "tilhorighet": {
                "units": [
                    {"org_unit_id": "IKS", "level": 1, "parent_id": None, "name": "IKS"},
                    {"org_unit_id": "K1", "level": 2, "parent_id": "IKS", "name": "Kommune 1"},
                    {"org_unit_id": "K2", "level": 2, "parent_id": "IKS", "name": "Kommune 2"},
                    {"org_unit_id": "E-31", "level": 3, "parent_id": "K1", "name": "Mottak"},
                    {"org_unit_id": "E-32", "level": 3, "parent_id": "K1", "name": "Omsorg"},
                    {"org_unit_id": "E-41", "level": 3, "parent_id": "K2", "name": "Mottak 2"},
                ],
                "values": [
                    {"org_unit_id": "IKS", "value": "3000"},
                    {"org_unit_id": "K1", "value": "3100"},
                    {"org_unit_id": "E-32", "value": "3120"},
                ],
            },
            "tiltak": [
                {"measure_types": ["1", "2", "8.2"], "org_unit_ids": ["K1"], "value": "252"},
                {"measure_types": ["1", "2", "8.2"], "org_unit_ids": ["K2"], "value": "2520"},
                {
                    "measure_types": ["3", "4", "5", "6", "7", "8"],
                    "org_unit_ids": ["K1"],
                    "value": "251",
                },
                {
                    "measure_types": ["3", "4", "5", "6", "7", "8"],
                    "org_unit_ids": ["K2"],
                    "value": "2510",
                },
            ],
            "barn": [{"child_id": "B-2002", "value": "P-REFUSJON-7"}],
            "grupper": [
                {"group_id": "G-7", "value": "PR-44"},
                {"group_id": "G-8", "value": "PR-45"},
            ],
            "mva": {
                "codes": ["0", "1", "11", "13"],
                "by_category": [{"category": "KJOP_TJENESTER", "code": "1"}],
            },
        },
    }
    base.update(overrides)
    return base


def event_dict(**overrides: Any) -> dict[str, Any]:
    """The contract's example event: a kindergarten-type payment for a child in foster care."""
    base: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "evt-0001",
        "occurred_at": "2026-11-20T10:15:00+01:00",
        "tenant_id": "t-test",
        "payment_id": "P-2026-000123",
        "status": "Betalt",
        "payment": {
            "amount": "17210.00",
            "currency": "NOK",
            "payment_date": "2026-11-20",
            "category": "FOSTERHJEM_GODTGJORELSE",
            "vat_code": None,
            "text": "Fosterhjemsgodtgjørelse november",
            "child_id": "B-1001",
            "org_unit_id": "E-31",
            "measure_id": "T-55",
        },
        "child": {
            "measures": [
                {"measure_id": "T-55", "type": "4.1", "start": "2026-01-01", "end": None},
            ],
            "group_ids": [],
        },
    }
    base.update(overrides)
    return base


def patch(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `d` with the dotted `path` set: patch(s, "settings.url", "…")."""
    out = copy.deepcopy(d)
    node: Any = out
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def snapshot(**overrides: Any) -> RegisterSnapshot:
    return RegisterSnapshot.model_validate(snapshot_dict(**overrides))


def index(snap: RegisterSnapshot | dict[str, Any] | None = None) -> RegisterIndex:
    s = (
        snap
        if isinstance(snap, RegisterSnapshot)
        else RegisterSnapshot.model_validate(snap or snapshot_dict())
    )
    assert check_snapshot(s) == [], check_snapshot(s)
    return RegisterIndex(s)


def event(d: dict[str, Any] | None = None, **payment: Any) -> PaymentStatusEvent:
    base = d or event_dict()
    if payment:
        base = copy.deepcopy(base)
        base["payment"].update(payment)
    return PaymentStatusEvent.model_validate(base)


# --- the register gap (R16) --------------------------------------------------------------

# A payment category in no tenant's Betalingstyper (the factories' nor the demo's): the
# payment is rejected MISSING_ACCOUNT, a gap a newer snapshot can fill.
GAP_CATEGORY = "REISEUTGIFTER"


def with_register_gap(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Betalt event whose category its tenant's Betalingstyper lack, and with no
    VAT code of its own (the tenant's applies)."""
    e = copy.deepcopy(event)
    e["payment"]["category"] = GAP_CATEGORY
    e["payment"]["vat_code"] = None
    return e


def filling_the_gap(snapshot: dict[str, Any], account: str = "14700") -> dict[str, Any]:
    """The snapshot's next version, its Betalingstyper mapping GAP_CATEGORY to `account`."""
    d = copy.deepcopy(snapshot)
    d["version"] += 1
    d["registers"]["betalingstype"].append({"category": GAP_CATEGORY, "value": account})
    return d


# --- submissions ---------------------------------------------------------------------------


def submission(tenant: str, i: int, account: str = "13700", amount: str = "1234.50") -> Submission:
    pid = f"P-{i:06d}"
    common = {"currency": "NOK", "postedDate": date(2026, 11, 20), "text": f"Barnehage {i}"}
    lines = [
        GLLine(
            extIdentifier=ext_identifier(tenant, pid, 1),
            account=account,
            amount=Decimal(amount),
            taxRule="0",
            glObject1="3100",
            **common,
        ),
        GLLine(
            extIdentifier=ext_identifier(tenant, pid, 2),
            account="1920",
            amount=-Decimal(amount),
            bankAccountRef="884412",
            **common,
        ),
    ]
    return Submission(
        tenant_id=tenant,
        payment_id=pid,
        event_id=f"evt-{i}",
        snapshot_version=1,
        dimensions={"1": account, "2": "3100"},
        vat_code="0",
        lines=lines,
        created_at=datetime(2026, 11, 20, tzinfo=UTC),
    )
