"""R1–R13: when a register snapshot is refused. Every problem is listed, not just the first.

A refused snapshot leaves the tenant's previous valid snapshot in force (contracts.md).
Messages are Norwegian: the people who fix them are the tenant's Flyt administrators.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from worker.contracts.payment_event import MEASURE_TYPE_PATTERN
from worker.contracts.register_snapshot import OrgUnit, Registers, RegisterSnapshot, Source
from worker.core.endpoints import UrlPolicy, url_allowed

ROLE_INNSTILLINGER = "Innstillinger"
ROLE_OKONOMIINNSTILLINGER = "Økonomiinnstillinger"

_MEASURE_TYPE = re.compile(MEASURE_TYPE_PATTERN)


@dataclass(frozen=True, slots=True)
class SnapshotRefusal:
    rule: str  # R1 … R13
    code: str
    message: str


Refuse = Callable[[str, str, str], None]


def _dupes(values: list[str]) -> list[str]:
    return sorted(v for v, n in Counter(values).items() if n > 1)


def check_snapshot(
    snapshot: RegisterSnapshot,
    previous: RegisterSnapshot | None = None,
    policy: UrlPolicy | None = None,
    *,
    check_roles: bool = True,
) -> list[SnapshotRefusal]:
    """All reasons to refuse `snapshot`, given the tenant's snapshot in force (if any).

    An empty list means the snapshot is valid and may replace `previous`. Without
    `check_roles`, R13 is left out: it depends on the snapshot in force, which only the
    worker knows.
    """
    policy = policy or UrlPolicy()
    out: list[SnapshotRefusal] = []

    def refuse(rule: str, code: str, message: str) -> None:
        out.append(SnapshotRefusal(rule, code, message))

    if previous is not None and snapshot.version <= previous.version:
        refuse(
            "R13",
            "STALE_VERSION",
            f"Versjon {snapshot.version} er ikke nyere enn gjeldende versjon {previous.version}.",
        )
    _check_settings(snapshot, policy, refuse)
    _check_dimensions(snapshot, refuse)
    _check_registers(snapshot, refuse)
    if check_roles:
        _check_roles(snapshot, previous, refuse)
    return out


def _check_settings(snapshot: RegisterSnapshot, policy: UrlPolicy, refuse: Refuse) -> None:
    s = snapshot.settings
    if s.accounting_system != "Xledger":
        refuse(
            "R1",
            "ACCOUNTING_SYSTEM_NOT_XLEDGER",
            f"Regnskapssystem er «{s.accounting_system}», men må være «Xledger».",
        )
    if not url_allowed(s.url, test_tenant=snapshot.test_tenant, policy=policy):
        refuse(
            "R2",
            "URL_NOT_ALLOWED",
            f"URL «{s.url}» er ikke tillatt. Bruk https://www.xledger.net/graphql eller "
            "https://xledger.net/graphql.",
        )


def _check_dimensions(snapshot: RegisterSnapshot, refuse: Refuse) -> None:
    dims = snapshot.dimensions
    for pos in _dupes([str(d.position) for d in dims]):
        refuse("R6", "DUPLICATE_POSITION", f"Dimensjon {pos} er satt opp mer enn én gang.")
    for field in _dupes([d.xledger_field for d in dims]):
        refuse(
            "R6",
            "DUPLICATE_XLEDGER_FIELD",
            f"Xledger-feltet {field} brukes av mer enn én dimensjon.",
        )
    first = [d for d in dims if d.position == 1]
    if not first or any(
        d.sources != [Source.BETALINGSTYPE] or d.xledger_field != "account" or not d.required
        for d in first
    ):
        refuse(
            "R6",
            "POSITION_1_NOT_BETALINGSTYPE",
            "Dimensjon 1 må hentes fra registeret Betalingstype, være påkrevd og gå til "
            "Xledger-feltet account (konto).",
        )
    for d in dims:
        if d.position != 1 and d.xledger_field == "account":
            refuse(
                "R6",
                "ACCOUNT_OUTSIDE_POSITION_1",
                f"Dimensjon {d.position} ({d.name}) kan ikke gå til feltet account; "
                "kontoen er alltid dimensjon 1.",
            )
        if d.position != 1 and Source.BETALINGSTYPE in d.sources:
            refuse(
                "R6",
                "BETALINGSTYPE_OUTSIDE_POSITION_1",
                f"Dimensjon {d.position} ({d.name}) kan ikke hentes fra Betalingstype; "
                "det registeret gir kontoen i dimensjon 1.",
            )


def _check_registers(snapshot: RegisterSnapshot, refuse: Refuse) -> None:
    r = snapshot.registers
    _check_betalingstyper(r, refuse)
    _check_tilhorighet(r, refuse)
    _check_tiltak(r, refuse)
    _check_barn(r, refuse)
    _check_grupper(r, refuse)
    _check_mva(r, snapshot.settings.default_vat_code, refuse)


def _check_betalingstyper(r: Registers, refuse: Refuse) -> None:
    """R7: a category has one account."""
    for cat in _dupes([e.category for e in r.betalingstype]):
        refuse(
            "R7",
            "DUPLICATE_CATEGORY",
            f"Betalingskategorien {cat} står mer enn én gang i Betalingstyper; "
            "en kategori kan bare ha én konto.",
        )


def _check_tilhorighet(r: Registers, refuse: Refuse) -> None:
    """R8: the units form a tree (level 1 at the top, each level under the one above), and
    values are given once, for units that exist."""
    units = {u.org_unit_id: u for u in r.tilhorighet.units}
    for uid in _dupes([u.org_unit_id for u in r.tilhorighet.units]):
        refuse("R8", "DUPLICATE_UNIT", f"Tilhørigheten {uid} står mer enn én gang.")
    for u in r.tilhorighet.units:
        if u.parent_id is None:
            if u.level != 1:
                refuse(
                    "R8",
                    "UNIT_LEVEL_MISMATCH",
                    f"Tilhørigheten {u.org_unit_id} er på nivå {u.level}, men har ingen "
                    "overordnet enhet; bare tjenesteeier (nivå 1) står øverst.",
                )
            continue
        parent = units.get(u.parent_id)
        if parent is None:
            refuse(
                "R8",
                "UNIT_PARENT_MISSING",
                f"Tilhørigheten {u.org_unit_id} har overordnet enhet {u.parent_id}, "
                "som ikke finnes i organisasjonsstrukturen.",
            )
        elif parent.level != u.level - 1:
            refuse(
                "R8",
                "UNIT_LEVEL_MISMATCH",
                f"Tilhørigheten {u.org_unit_id} er på nivå {u.level}, men den overordnede "
                f"enheten {parent.org_unit_id} er på nivå {parent.level}.",
            )
    for uid in _cycles(units):
        refuse(
            "R8",
            "UNIT_CYCLE",
            f"Organisasjonsstrukturen går i ring ved tilhørigheten {uid}.",
        )
    for uid in _dupes([v.org_unit_id for v in r.tilhorighet.values]):
        refuse("R8", "DUPLICATE_UNIT_VALUE", f"Tilhørigheten {uid} har mer enn én verdi.")
    for v in r.tilhorighet.values:
        if v.org_unit_id not in units:
            refuse(
                "R8",
                "UNIT_VALUE_UNKNOWN_UNIT",
                f"Registeret Tilhørighet har verdi for {v.org_unit_id}, som ikke finnes i "
                "organisasjonsstrukturen.",
            )


def _check_tiltak(r: Registers, refuse: Refuse) -> None:
    """R9: every entry names dotted measure types and units that exist."""
    units = {u.org_unit_id for u in r.tilhorighet.units}
    for i, entry in enumerate(r.tiltak, start=1):
        for t in entry.measure_types:
            if not _is_measure_type(t):
                refuse(
                    "R9",
                    "TILTAK_BAD_TYPE",
                    f"Tiltak-rad {i}: «{t}» er ikke en tiltakstype (som 2 eller 8.2).",
                )
        for uid in entry.org_unit_ids:
            if uid not in units:
                refuse(
                    "R9",
                    "TILTAK_UNKNOWN_UNIT",
                    f"Tiltak-rad {i} viser til tilhørigheten {uid}, som ikke finnes i "
                    "organisasjonsstrukturen.",
                )


def _check_barn(r: Registers, refuse: Refuse) -> None:
    """R10: a value is used for one child only."""
    for child in _dupes([b.child_id for b in r.barn]):
        refuse("R10", "DUPLICATE_CHILD", f"Barnet {child} står mer enn én gang i registeret Barn.")
    children_by_value: dict[str, set[str]] = {}
    for b in r.barn:
        children_by_value.setdefault(b.value, set()).add(b.child_id)
    for value, children in sorted(children_by_value.items()):
        if len(children) > 1:
            refuse(
                "R10",
                "BARN_VALUE_ON_TWO_CHILDREN",
                f"Verdien {value} i registeret Barn brukes for flere barn "
                f"({', '.join(sorted(children))}); en verdi kan bare brukes mot ett barn.",
            )


def _check_grupper(r: Registers, refuse: Refuse) -> None:
    """R11 (the register itself; the one-valued-group rule is checked per payment)."""
    for gid in _dupes([g.group_id for g in r.grupper]):
        refuse(
            "R11", "DUPLICATE_GROUP", f"Gruppen {gid} står mer enn én gang i registeret Grupper."
        )


def _check_mva(r: Registers, default: str | None, refuse: Refuse) -> None:
    """R12: one code per category; where the register lists valid codes, every code used
    is among them."""
    codes = set(r.mva.codes)
    for cat in _dupes([m.category for m in r.mva.by_category]):
        refuse(
            "R12",
            "DUPLICATE_MVA_CATEGORY",
            f"Betalingskategorien {cat} har mer enn én MVA-kode.",
        )
    if codes:
        for m in r.mva.by_category:
            if m.code not in codes:
                refuse(
                    "R12",
                    "MVA_CODE_NOT_IN_CODES",
                    f"MVA-koden {m.code} for kategorien {m.category} er ikke blant de gyldige "
                    "MVA-kodene.",
                )
        if default is not None and default not in codes:
            refuse(
                "R12",
                "MVA_CODE_NOT_IN_CODES",
                f"Standard MVA-kode {default} er ikke blant de gyldige MVA-kodene.",
            )


def _is_measure_type(value: str) -> bool:
    return _MEASURE_TYPE.fullmatch(value) is not None


def _cycles(units: Mapping[str, OrgUnit]) -> list[str]:
    """Units whose ancestry loops back on itself (each cycle reported once, by its smallest id)."""
    found: set[str] = set()
    for start in units:
        seen: list[str] = []
        uid: str | None = start
        while uid is not None and uid in units and uid not in seen:
            seen.append(uid)
            uid = units[uid].parent_id
        if uid is not None and uid in seen:
            cycle = seen[seen.index(uid) :]
            found.add(min(cycle))
    return sorted(found)


def _check_roles(
    snapshot: RegisterSnapshot, previous: RegisterSnapshot | None, refuse: Refuse
) -> None:
    """R13: the publisher needs the role for what the snapshot changes."""
    roles = set(snapshot.published_by.roles)
    if previous is None:
        settings_changed = registers_changed = True  # the first snapshot changes everything
    else:
        settings_changed = (snapshot.settings, snapshot.test_tenant) != (
            previous.settings,
            previous.test_tenant,
        )
        registers_changed = (snapshot.dimensions, snapshot.registers) != (
            previous.dimensions,
            previous.registers,
        )
    who = snapshot.published_by.user_id
    if settings_changed and ROLE_INNSTILLINGER not in roles:
        refuse(
            "R13",
            "PUBLISHER_LACKS_ROLE",
            f"Brukeren {who} har ikke rollen {ROLE_INNSTILLINGER}, som trengs for å endre "
            "Xledger-innstillingene.",
        )
    if registers_changed and ROLE_OKONOMIINNSTILLINGER not in roles:
        refuse(
            "R13",
            "PUBLISHER_LACKS_ROLE",
            f"Brukeren {who} har ikke rollen {ROLE_OKONOMIINNSTILLINGER}, som trengs for å "
            "endre dimensjoner og registre.",
        )
