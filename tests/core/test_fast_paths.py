"""The core's fast paths decide as the rules read (R6–R12, R15, R18; issue 20).

`evaluate` runs on a per-snapshot index (`RegisterIndex`: a plan of dimensions, a Tiltak
table per unit, lookups by dict) and builds its lines as named tuples. Here a reference
evaluator that scans the snapshot itself, written from domain.md with no index, decides
the same payments: the bench's tenants (registers padded to a municipality's size), their
events, and those events bent towards every rule's edges (unknown units and categories,
the padded units, groups and children, placement types, ambiguous and more specific
Tiltak rows, VAT codes). Every outcome must be the same, problem texts included.
"""

from __future__ import annotations

import copy
import json
import random
from datetime import date
from typing import Any

import pytest

from worker.bench.data import events_for, snapshot_dict, tenant_ids
from worker.contracts import PaymentStatusEvent, RegisterSnapshot
from worker.contracts.payment_event import Measure
from worker.contracts.register_snapshot import Source
from worker.core import Enriched, evaluate
from worker.core import messages as m
from worker.core.register_book import RegisterBook
from worker.core.register_index import RegisterIndex
from worker.core.snapshot_rules import check_snapshot

TENANTS = tenant_ids(12)  # four clones of each demo tenant
PLACEMENTS = ("1", "2", "8.2")


# --- the reference: the rules, read straight off the snapshot ----------------------------


def _matches(register_type: str, measure_type: str) -> bool:
    """R9 (decided): "2" matches "2" and "2.1"; "8.2" does not match "8.3"."""
    return measure_type == register_type or measure_type.startswith(register_type + ".")


def _governing(measures: list[Measure], own: str | None, on: date) -> Measure | None:
    """R9: the active placement measure with the latest start (then the smallest id),
    else the payment's own measure."""
    active = [
        x
        for x in measures
        if any(_matches(t, x.type) for t in PLACEMENTS)
        and x.start <= on
        and (x.end is None or x.end >= on)
    ]
    if active:
        latest = max(x.start for x in active)
        return min((x for x in active if x.start == latest), key=lambda x: x.measure_id)
    return next((x for x in measures if x.measure_id == own), None)


def reference(event: PaymentStatusEvent, snap: RegisterSnapshot) -> tuple[Any, ...]:
    p, r = event.payment, snap.registers
    parent = {u.org_unit_id: u.parent_id for u in r.tilhorighet.units}
    chain: list[str] = []
    if p.org_unit_id in parent:
        uid: str | None = p.org_unit_id
        while uid is not None:
            chain.append(uid)
            uid = parent[uid]
    dims = sorted(snap.dimensions, key=lambda d: d.position)
    first_grupper = next((d.position for d in dims if Source.GRUPPER in d.sources), None)
    valued = sorted({g for g in event.child.group_ids if g in {e.group_id for e in r.grupper}})
    problems: list[Any] = []
    values: dict[str, str] = {}
    fields: dict[str, str] = {}
    for d in dims:
        before = len(problems)
        if d.position == first_grupper and len(valued) > 1:  # R11, decided: even if equal
            problems.append(m.group_conflict(d.position, valued))
        value: str | None = None
        for source in d.sources:  # R6: the first source that yields a value wins
            if source is Source.BETALINGSTYPE:  # R7
                value = next((e.value for e in r.betalingstype if e.category == p.category), None)
            elif source in (Source.TILHORIGHET, Source.TILTAK) and not chain:
                problems.append(m.unknown_org_unit(d.position, d.name, p.org_unit_id))
            elif source is Source.TILHORIGHET:  # R8: nearest unit up the tree with a value
                own = {v.org_unit_id: v.value for v in r.tilhorighet.values}
                value = next((own[u] for u in chain if u in own), None)
            elif source is Source.TILTAK:  # R9
                g = _governing(event.child.measures, p.measure_id, p.payment_date)
                hits = [
                    (len(t.split(".")), -chain.index(u), t, u, e.value)
                    for e in r.tiltak
                    for t in e.measure_types
                    for u in e.org_unit_ids
                    if g is not None and _matches(t, g.type) and u in chain
                ]
                if hits:  # the most specific type, then the deepest unit
                    _, _, t, u, _ = max(hits)
                    found = sorted({h[4] for h in hits if (h[2], h[3]) == (t, u)})
                    if len(found) > 1:
                        problems.append(m.ambiguous_tiltak(d.position, d.name, t, u, found))
                    else:
                        value = found[0]
            elif source is Source.BARN:  # R10
                value = next((b.value for b in r.barn if b.child_id == p.child_id), None)
            elif source is Source.GRUPPER and len(valued) == 1:  # R11: one valued group
                value = next(e.value for e in r.grupper if e.group_id == valued[0])
            if value is not None or len(problems) > before:
                break
        if len(problems) > before:
            continue
        if value is not None:
            values[str(d.position)] = value
            fields[d.xledger_field] = value
        elif d.required:
            problems.append(
                m.missing_account(p.category)
                if d.position == 1
                else m.missing_dimension_value(d.position, d.name, d.sources)
            )
    by_category = {x.category: x.code for x in r.mva.by_category}  # R12
    vat = p.vat_code or by_category.get(p.category) or snap.settings.default_vat_code
    if vat is None:
        problems.append(m.missing_vat_code(p.category))
    elif r.mva.codes and vat not in r.mva.codes:
        problems.append(m.unknown_vat_code(vat))
    if problems:
        return ("rejected", snap.version, [(x.code, x.position, x.message) for x in problems])
    assert vat is not None
    s = snap.settings
    both = {  # R18
        "currency": p.currency,
        "postedDate": p.payment_date.isoformat(),
        "text": p.text or f"Flyt betaling {event.payment_id}",
    }
    ext = f"flyt:{event.tenant_id}:{event.payment_id}"
    expense = {"extIdentifier": f"{ext}:1", "amount": f"{p.amount:.2f}", **both}
    expense |= {"taxRule": vat, **fields}
    counter = {"extIdentifier": f"{ext}:2", "account": s.counter_account, **both}
    counter["amount"] = f"{-p.amount:.2f}"
    if s.bank_account_pkey:
        counter["bankAccountRef"] = s.bank_account_pkey
    return ("posted", snap.version, values, vat, [expense, counter], s.url)


def outcome(event: PaymentStatusEvent, index: RegisterIndex) -> tuple[Any, ...]:
    result = evaluate(event, index)
    if isinstance(result, Enriched):
        lines = [line.to_json() for line in result.lines]
        v = result.snapshot_version
        return ("posted", v, result.dimensions, result.vat_code, lines, result.xledger_url)
    return (
        "rejected",
        result.snapshot_version,
        [(x.code, x.position, x.message) for x in result.problems],
    )


# --- the cases ---------------------------------------------------------------------------


def _tenants() -> list[dict[str, Any]]:
    snaps = [snapshot_dict(t) for t in TENANTS]
    # Tiltak's ranks, on one clone of each kind: two values for one (type, unit) is
    # ambiguous; a more specific type at a shallower unit beats a deeper, plainer one.
    for snap in snaps[:3]:
        tiltak = snap["registers"]["tiltak"]
        tiltak += [
            {"measure_types": ["4"], "org_unit_ids": ["BENCH-D01"], "value": "X1"},
            {"measure_types": ["4", "5"], "org_unit_ids": ["BENCH-D01"], "value": "X2"},
            {"measure_types": ["4.1"], "org_unit_ids": ["BENCH-D02"], "value": "X41"},
            {"measure_types": ["4"], "org_unit_ids": ["BENCH-D02-03"], "value": "X4"},
            {"measure_types": ["8"], "org_unit_ids": ["BENCH-D03-01"], "value": "X8"},
        ]
        snap["version"] = 2
    return snaps


def _bend(e: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    e = copy.deepcopy(e)
    p, child = e["payment"], e["child"]
    for _ in range(rnd.randrange(1, 4)):
        k = rnd.randrange(8)
        if k == 0:
            p["org_unit_id"] = rnd.choice(
                ["BENCH-D01", "BENCH-D02", "BENCH-D02-03", "BENCH-D03-01", "NO-SUCH", "K2"]
            )
        elif k == 1:
            child["group_ids"] = rnd.sample(
                ["BENCH-G-001", "BENCH-G-002", "G-ETTERVERN", "G-TIDLIG-INNSATS", "NONE"],
                rnd.randrange(4),
            )
        elif k == 2:
            p["category"] = rnd.choice(["BENCH_KATEGORI_003", "KJOP_TJENESTER", "NO-SUCH"])
        elif k == 3:
            p["child_id"] = rnd.choice(["BENCH-B-00007", "VBV-B-0007", "NO-SUCH"])
        elif k == 4:
            for x in child["measures"]:
                x["type"] = rnd.choice(["1", "2.1", "8.2", "8.3", "4", "4.1", "4.1.2", "5"])
        elif k == 5:
            p["vat_code"] = rnd.choice([None, "0", "1", "99"])
        elif k == 6:
            p["measure_id"] = rnd.choice(
                [None, "NO-SUCH", *(x["measure_id"] for x in child["measures"])]
            )
        else:
            for x in child["measures"]:
                x["start"] = rnd.choice(["2020-01-01", "2026-01-01", "2027-01-01"])
                x["end"] = rnd.choice([None, "2025-12-31", "2030-01-01"])
    return e


def _events() -> list[PaymentStatusEvent]:
    rnd = random.Random(20)
    out = []
    for i, e in enumerate(x for x in events_for(TENANTS, 6000, seed=20) if x["status"] == "Betalt"):
        out.append(_bend(e, rnd) if i % 2 else e)
    return [PaymentStatusEvent.model_validate_json(json.dumps(e)) for e in out]


@pytest.fixture(scope="module")
def world() -> tuple[dict[str, RegisterSnapshot], RegisterBook, list[PaymentStatusEvent]]:
    snaps = {}
    book = RegisterBook()
    for d in _tenants():
        snap = RegisterSnapshot.model_validate(d)
        assert check_snapshot(snap) == [], check_snapshot(snap)
        assert book.offer(snap).accepted
        snaps[snap.tenant_id] = snap
    return snaps, book, _events()


def test_the_indexed_core_decides_every_payment_as_the_rules_read(world: Any) -> None:
    snaps, book, events = world
    kinds: dict[str, int] = {}
    codes: set[str] = set()
    for event in events:
        got = outcome(event, book.index(event.tenant_id))
        want = reference(event, snaps[event.tenant_id])
        assert got == want, (event.tenant_id, event.payment_id)
        kinds[got[0]] = kinds.get(got[0], 0) + 1
        if got[0] == "rejected":
            codes.update(str(code) for code, _, _ in got[2])
    # The cases reach every branch: both outcomes, and each problem an index could get wrong.
    assert kinds["posted"] > 1000 and kinds["rejected"] > 200
    assert codes >= {
        "MISSING_ACCOUNT",
        "UNKNOWN_ORG_UNIT",
        "AMBIGUOUS_REGISTER",
        "GROUP_CONFLICT",
        "MISSING_VAT_CODE",
        "UNKNOWN_VAT_CODE",
    }


def test_a_more_specific_tiltak_type_beats_a_deeper_unit_and_a_tie_is_ambiguous(
    world: Any,
) -> None:
    _, book, _ = world
    index = book.index(TENANTS[0])
    # 4.1 at BENCH-D02 is more specific than 4 at its child BENCH-D02-03 (R9, decided).
    assert index.tiltak_match("4.1.2", "BENCH-D02-03") == ("4.1", "BENCH-D02", ("X41",))
    assert index.tiltak_match("4.2", "BENCH-D02-03") == ("4", "BENCH-D02-03", ("X4",))
    assert index.tiltak_match("4", "BENCH-D01-02") == ("4", "BENCH-D01", ("259", "X1", "X2"))
    assert index.tiltak_match("8.2", "BENCH-D03-01") == ("8.2", "BENCH-D03", ("253",))
    assert index.tiltak_match("9", "BENCH-D03-01") is None
    assert index.tiltak_match("4", "NO-SUCH") is None


def test_the_index_keeps_the_snapshot_s_head_and_gives_it_back_whole(world: Any) -> None:
    snaps, book, _ = world
    for tenant, snap in snaps.items():
        index = book.index(tenant)
        head = (index.version, index.published_at, index.published_by, index.test_tenant)
        assert head == (snap.version, snap.published_at, snap.published_by, snap.test_tenant)
        assert index.settings == snap.settings and index.tenant_id == tenant
        assert index.read_snapshot() == snap
        assert index.snapshot == snap and index.snapshot is index.snapshot  # kept once read


def test_r13_still_compares_a_new_version_with_the_registers_in_force() -> None:
    """The book no longer keeps the parsed snapshot: R13 reads it back, and a publisher
    with Innstillinger alone may change settings but not registers."""
    book = RegisterBook()
    first = snapshot_dict(TENANTS[0])
    assert book.offer(RegisterSnapshot.model_validate(first)).accepted
    settings_only = copy.deepcopy(first)
    settings_only |= {"version": 2, "published_by": {"user_id": "u", "roles": ["Innstillinger"]}}
    settings_only["settings"]["counter_account"] = "1921"
    assert book.offer(RegisterSnapshot.model_validate(settings_only)).accepted
    registers_too = copy.deepcopy(settings_only)
    registers_too["version"] = 3
    registers_too["registers"]["barn"].pop()
    offer = book.offer(RegisterSnapshot.model_validate(registers_too))
    assert not offer.accepted
    assert [r.code for r in offer.refusals] == ["PUBLISHER_LACKS_ROLE"]
    assert book.version(TENANTS[0]) == 2
