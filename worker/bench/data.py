"""The bench's tenants and events.

Tenants are clones of the three demo tenants (`t-vestfold-bv-001`, …), so the demo's
event generator still fits them. Each clone's registers are padded to the size of a
real municipality's (`PADDING`): more Betalingstyper, an org tree of ~60 units with
values, Tiltak rows for them, a few hundred children in Barn and some groups. The
padding uses ids the events never carry, so outcomes are the demo's.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Iterable
from typing import Any

from worker.demo.events import generate_events
from worker.demo.snapshots import DEMO_TENANTS, demo_snapshot_dicts

MUNICIPALITIES = 356  # Norway's municipalities (2024): the tenant count to plan memory for

# Per tenant, beyond the demo's own rows: sizes seen in a mid-sized municipality.
PADDING = {
    "betalingstyper": 40,
    "districts": 8,
    "units_per_district": 6,
    "barn": 300,
    "grupper": 30,
}


def tenant_ids(n: int) -> list[str]:
    """n clone tenants, spread round-robin over the three demo tenants."""
    return [f"{DEMO_TENANTS[i % 3]}-{i // 3 + 1:03d}" for i in range(n)]


def base_of(tenant: str) -> str:
    return tenant.rsplit("-", 1)[0]


def snapshot_dict(tenant: str, padded: bool = True) -> dict[str, Any]:
    """The clone's register snapshot: its base's, under its own id and token_ref."""
    bases = {d["tenant_id"]: d for d in demo_snapshot_dicts()}
    snap = copy.deepcopy(bases[base_of(tenant)])
    snap["tenant_id"] = tenant
    snap["settings"]["token_ref"] = tenant
    if padded:
        _pad(snap["registers"])
    return snap


def _pad(reg: dict[str, Any]) -> None:
    p = PADDING
    reg["betalingstype"] += [
        {"category": f"BENCH_KATEGORI_{i:03d}", "value": f"{16000 + i}"}
        for i in range(p["betalingstyper"])
    ]
    tree = reg["tilhorighet"]
    root = next(u["org_unit_id"] for u in tree["units"] if u["level"] == 1)
    for d in range(1, p["districts"] + 1):
        district = f"BENCH-D{d:02d}"
        tree["units"].append(
            {"org_unit_id": district, "level": 2, "parent_id": root, "name": f"Distrikt {d}"}
        )
        tree["values"].append({"org_unit_id": district, "value": f"{4000 + d * 10}"})
        for k in range(1, p["units_per_district"] + 1):
            unit = f"{district}-{k:02d}"
            tree["units"].append(
                {"org_unit_id": unit, "level": 3, "parent_id": district, "name": f"Team {d}.{k}"}
            )
            tree["values"].append({"org_unit_id": unit, "value": f"{4000 + d * 10 + k}"})
        reg["tiltak"] += [
            {"measure_types": ["1", "2", "8.2"], "org_unit_ids": [district], "value": f"25{d}"},
            {
                "measure_types": ["3", "4", "5", "6", "7"],
                "org_unit_ids": [district],
                "value": "259",
            },
        ]
    reg["barn"] += [
        {"child_id": f"BENCH-B-{i:05d}", "value": f"P-BARN-{i:05d}"} for i in range(p["barn"])
    ]
    reg["grupper"] += [
        {"group_id": f"BENCH-G-{i:03d}", "value": f"PR-{100 + i}"} for i in range(p["grupper"])
    ]


def events_for(tenants: list[str], n: int, seed: int) -> list[dict[str, Any]]:
    """The demo generator's n events, each moved to a clone of its tenant. A payment
    always lands on the same clone (by its id), so re-sent Betalt events stay duplicates."""
    by_base: dict[str, list[str]] = {}
    for t in tenants:
        by_base.setdefault(base_of(t), []).append(t)
    bases = [b for b in DEMO_TENANTS if b in by_base]
    out = []
    for e in generate_events(n, seed=seed, tenants=bases):
        clones = by_base[e["tenant_id"]]
        e = dict(e)
        e["tenant_id"] = clones[zlib.crc32(e["payment_id"].encode()) % len(clones)]
        out.append(e)
    return out


def betalt_keys(events: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """Payments that must end in an outcome (posted or rejected): every Betalt one."""
    return {(e["tenant_id"], e["payment_id"]) for e in events if e["status"] == "Betalt"}


def snapshot_bytes(tenant: str) -> bytes:
    return json.dumps(snapshot_dict(tenant), ensure_ascii=False).encode()
