"""A deterministic generator of realistic Flyt payment-status events for the demo tenants.

Mostly Betalt; some earlier statuses; some re-sent Betalt events (duplicates); and a few
that hit register gaps (unknown category, unknown unit, unknown VAT code) and group
conflicts, so every outcome shows up in a demo run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

CET = timezone(timedelta(hours=1))

# Measure types (dotted, R9): 1.x institution, 2.x foster home, 8.2 housing with follow-up
# are placements; 3.x support contact, 4.x kindergarten/SFO, 5.x respite, 7.x supervision.
_CATEGORY_BY_MEASURE = {
    "2.1": ["FOSTERHJEM_GODTGJORELSE", "FOSTERHJEM_UTGIFTSDEKNING", "TILSYNSFORER"],
    "2.2": ["FOSTERHJEM_GODTGJORELSE", "FOSTERHJEM_UTGIFTSDEKNING", "TILSYNSFORER"],
    "1.1": ["KJOP_TJENESTER"],
    "8.2": ["KJOP_TJENESTER"],
    "3.1": ["STOTTEKONTAKT"],
    "4.1": ["BARNEHAGE"],
    "4.2": ["SFO"],
    "5.1": ["AVLASTNING"],
}

# Monthly amounts in NOK, around KS's recommended foster-home rates and usual local prices.
_AMOUNT_RANGE = {
    "FOSTERHJEM_GODTGJORELSE": (9_800, 21_500),
    "FOSTERHJEM_UTGIFTSDEKNING": (5_100, 7_900),
    "TILSYNSFORER": (900, 2_400),
    "KJOP_TJENESTER": (28_000, 160_000),
    "STOTTEKONTAKT": (1_050, 5_300),
    "BARNEHAGE": (1_200, 2_000),
    "SFO": (1_500, 3_400),
    "AVLASTNING": (2_200, 6_800),
}

_TEXT = {
    "FOSTERHJEM_GODTGJORELSE": "Fosterhjemsgodtgjørelse",
    "FOSTERHJEM_UTGIFTSDEKNING": "Utgiftsdekning fosterhjem",
    "TILSYNSFORER": "Honorar tilsynsfører",
    "KJOP_TJENESTER": "Kjøp av tjenester",
    "STOTTEKONTAKT": "Støttekontakt",
    "BARNEHAGE": "Barnehage",
    "SFO": "SFO",
    "AVLASTNING": "Avlastning",
}

_MONTHS = [
    "januar",
    "februar",
    "mars",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "desember",
]

# Per tenant: (child id prefix, units where its payments are made, groups with values).
_TENANTS = {
    "t-vestfold-bv": (
        "VBV",
        ["K1-MOT", "K1-OMS", "K2-MOT", "K2-OMS", "K1", "K2"],
        ["G-TIDLIG-INNSATS", "G-ENSLIGE-MINDREARIGE", "G-ETTERVERN"],
    ),
    "t-lillevik": ("LV", ["LV-UND", "LV-TILT", "LV-TILT-FH"], []),
    "t-fjordby-test": ("FB", ["FB-1", "FB-2"], ["G-A", "G-B"]),
}
_OTHER_STATUSES = ["Ny", "SendtAutoPay", "Godkjent", "SendtBank", "Avvist", "Kansellert"]


def _child(rng: random.Random, tenant: str, n: int) -> dict[str, Any]:
    prefix, _units, groups = _TENANTS[tenant]
    measures = []
    k = 0
    if rng.random() < 0.55:  # most children with payments are placed
        k += 1
        measures.append(
            {
                "measure_id": f"{prefix}-T-{n:04d}-{k}",
                "type": rng.choice(["2.1", "2.2", "2.2", "1.1", "8.2"]),
                "start": f"20{rng.randint(19, 26)}-{rng.randint(1, 9):02d}-01",
                "end": None,
            }
        )
    for _ in range(rng.randint(0 if measures else 1, 2)):
        k += 1
        ended = rng.random() < 0.1
        measures.append(
            {
                "measure_id": f"{prefix}-T-{n:04d}-{k}",
                "type": rng.choice(["3.1", "4.1", "4.2", "5.1"]),
                "start": f"2025-{rng.randint(1, 12):02d}-01",
                "end": "2026-06-30" if ended else None,
            }
        )
    group_ids = ["G-FAGTEAM-1"] if rng.random() < 0.3 else []  # a group without a value
    if groups and rng.random() < 0.2:
        group_ids.append(rng.choice(groups))
    return {"child_id": f"{prefix}-B-{n:04d}", "measures": measures, "group_ids": group_ids}


def generate_events(
    n: int, *, seed: int = 2026, start: date = date(2026, 11, 2), tenants: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield `n` PaymentStatusEvent dicts (JSON-ready), reproducible for a given seed."""
    rng = random.Random(seed)
    tenant_ids = tenants or list(_TENANTS)
    children = {t: [_child(rng, t, i) for i in range(1, 241)] for t in tenant_ids}
    betalt_sent: list[dict[str, Any]] = []
    when = datetime.combine(start, datetime.min.time(), CET).replace(hour=7)
    for i in range(1, n + 1):
        when += timedelta(seconds=rng.randint(1, 20))
        if betalt_sent and rng.random() < 0.03:  # Flyt re-sends a Betalt event (R17)
            dup = dict(rng.choice(betalt_sent))
            dup["event_id"] = f"evt-{seed}-{i:07d}"
            dup["occurred_at"] = when.isoformat()
            yield dup
            continue
        tenant = rng.choice(tenant_ids)
        _prefix, units, groups = _TENANTS[tenant]
        child = rng.choice(children[tenant])
        measure = rng.choice(child["measures"])
        category = rng.choice(_CATEGORY_BY_MEASURE[measure["type"]])
        lo, hi = _AMOUNT_RANGE[category]
        amount = f"{rng.randint(lo * 100, hi * 100) / 100:.2f}"
        pay_date = start + timedelta(days=rng.randint(0, 27))
        org_unit = rng.choice(units)
        vat_code = None
        group_ids = list(child["group_ids"])
        gap = rng.random()
        if gap < 0.02:
            category = "REISEUTGIFTER"  # not in Betalingstyper: MISSING_ACCOUNT
        elif gap < 0.03:
            org_unit = "UKJENT-ENHET"  # UNKNOWN_ORG_UNIT
        elif gap < 0.04 and len(groups) >= 2:
            group_ids = groups[:2]  # GROUP_CONFLICT (R11)
        elif gap < 0.045:
            vat_code = "25"  # UNKNOWN_VAT_CODE where the tenant lists its codes
        status = "Betalt" if rng.random() < 0.85 else rng.choice(_OTHER_STATUSES)
        event = {
            "schema_version": 1,
            "event_id": f"evt-{seed}-{i:07d}",
            "occurred_at": when.isoformat(),
            "tenant_id": tenant,
            "payment_id": f"P-{tenant[2:5].upper()}-{seed}-{i:07d}",
            "status": status,
            "payment": {
                "amount": amount,
                "currency": "NOK",
                "payment_date": pay_date.isoformat(),
                "category": category,
                "vat_code": vat_code,
                "text": f"{_TEXT.get(category, 'Reiseutgifter')} {_MONTHS[pay_date.month - 1]}",
                "child_id": child["child_id"],
                "org_unit_id": org_unit,
                "measure_id": measure["measure_id"],
            },
            "child": {"measures": child["measures"], "group_ids": group_ids},
        }
        if status == "Betalt":
            betalt_sent.append(event)
        yield event


BAD_LINES = [
    "",
    "not json at all",
    '{"schema_version": 1, "event_id": "evt-bad-1"}',
    "[1, 2, 3]",
    '{"schema_version": 2, "event_id": "evt-bad-2", "tenant_id": "t-lillevik", '
    '"payment_id": "P-X"}',
    "\u00ff\u00fe garbage \u0000",
]


def bad_event_lines(n: int, *, seed: int = 7) -> list[str]:
    """Unreadable or invalid event payloads, for `--bad` and the garbage tests."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(f"garbage-{i}-" + "".join(rng.choice('{}[]",:xyz') for _ in range(12)))
        elif kind in (1, 2):
            event: dict[str, Any] = {
                "schema_version": 1,
                "event_id": f"evt-bad-{i}",
                "occurred_at": "2026-11-20T10:00:00+01:00",
                "tenant_id": "t-lillevik",
                "payment_id": f"P-BAD-{i}",
                "status": "Betalt",
                "payment": {
                    "amount": "17.50",
                    "currency": "NOK",
                    "payment_date": "2026-11-20",
                    "category": "BARNEHAGE",
                    "child_id": "LV-B-0001",
                    "org_unit_id": "LV",
                },
                "child": {"measures": [], "group_ids": []},
            }
            if kind == 1:
                event["payment"]["amount"] = 17.5  # a float: refused (contracts.md: never floats)
            else:
                event["status"] = "Utbetalt"  # not a status Flyt has
            out.append(json.dumps(event))
        else:
            out.append(BAD_LINES[(i // 4) % len(BAD_LINES)] or "{}")
    return out
