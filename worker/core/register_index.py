"""A valid snapshot, precomputed so that evaluating one payment does no scan over a register.

Built once per snapshot version; every lookup afterwards is a dict access over at most
(type prefixes) keys. The index keeps what the rules need (R6–R12) and the snapshot's
head (version, publisher, settings); the registers themselves only as compressed JSON
(~5 KB), read back by `snapshot` for R13 and the tools that want them whole. A parsed
snapshot of a municipality's size is ~0.27 MB of pydantic objects, its index and head
~0.05 MB: 356 tenants' register book is 17 MB instead of 105 MB.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

from worker.contracts.register_snapshot import (
    Dimension,
    Publisher,
    RegisterSnapshot,
    Source,
    TenantSettings,
)
from worker.core.measures import type_prefixes

TiltakHit = tuple[str, str, tuple[str, ...]]
"""(register type, unit, the distinct values of the Tiltak entries naming both)."""


@dataclass(frozen=True, slots=True)
class DimensionPlan:
    """One position of the accounting string, as the evaluation walks it (R6)."""

    position: int
    key: str  # the position as `Enriched.dimensions` keys it
    name: str
    xledger_field: str
    sources: tuple[Source, ...]  # in order: the first that yields a value wins
    required: bool
    checks_groups: bool  # R11: the first dimension using Grupper reports a group conflict


class RegisterIndex:
    __slots__ = (
        "_compressed",
        "_parsed",
        "accounts",
        "barn",
        "default_vat_code",
        "dimensions",
        "grupper",
        "grupper_position",
        "mva_by_category",
        "mva_codes",
        "plan",
        "published_at",
        "published_by",
        "settings",
        "tenant_id",
        "test_tenant",
        "tiltak_best",
        "unit_value",
        "version",
    )

    def __init__(self, snapshot: RegisterSnapshot) -> None:
        """`snapshot` must already have passed `check_snapshot`."""
        r = snapshot.registers
        # The snapshot's head: what the post stage, the observer and the tools read.
        self.tenant_id = snapshot.tenant_id
        self.version = snapshot.version
        self.published_at: datetime = snapshot.published_at
        self.published_by: Publisher = snapshot.published_by
        self.test_tenant: bool = snapshot.test_tenant
        self.settings: TenantSettings = snapshot.settings
        self._compressed = zlib.compress(snapshot.model_dump_json().encode(), 1)
        self._parsed: RegisterSnapshot | None = None

        self.dimensions: tuple[Dimension, ...] = tuple(
            sorted(snapshot.dimensions, key=lambda d: d.position)
        )
        # R11 applies only where some dimension uses Grupper; the conflict is reported once,
        # on the first such dimension.
        self.grupper_position: int | None = next(
            (d.position for d in self.dimensions if Source.GRUPPER in d.sources), None
        )
        self.plan: tuple[DimensionPlan, ...] = tuple(
            DimensionPlan(
                position=d.position,
                key=str(d.position),
                name=d.name,
                xledger_field=d.xledger_field,
                sources=tuple(d.sources),
                required=d.required,
                checks_groups=d.position == self.grupper_position,
            )
            for d in self.dimensions
        )

        self.accounts: dict[str, str] = {e.category: e.value for e in r.betalingstype}  # R7

        # R8: each unit's chain (itself first, then its ancestors) and its inherited value.
        parents = {u.org_unit_id: u.parent_id for u in r.tilhorighet.units}
        chains: dict[str, tuple[str, ...]] = {}
        for uid in parents:
            chain = [uid]
            parent = parents[uid]
            while parent is not None:
                chain.append(parent)
                parent = parents[parent]
            chains[uid] = tuple(chain)
        own = {v.org_unit_id: v.value for v in r.tilhorighet.values}
        # Every unit of the tree is a key (its value None when no unit in its chain has one).
        self.unit_value: dict[str, str | None] = {
            uid: next((own[u] for u in chain if u in own), None) for uid, chain in chains.items()
        }

        # R9: (register type, unit) → the distinct values of the entries naming both …
        named: dict[tuple[str, str], set[str]] = {}
        for entry in r.tiltak:
            for t in entry.measure_types:
                for uid in entry.org_unit_ids:
                    named.setdefault((t, uid), set()).add(entry.value)
        types_at: dict[str, list[str]] = {}
        hits: dict[tuple[str, str], TiltakHit] = {}
        for (t, uid), values in named.items():
            types_at.setdefault(uid, []).append(t)
            hits[t, uid] = (t, uid, tuple(sorted(values)))
        # … and, per unit, each register type's hit at the deepest unit of its chain, so
        # that the best match is found by type prefix alone (`tiltak_match`).
        self.tiltak_best: dict[str, dict[str, TiltakHit]] = {}
        for uid in {*chains, *types_at}:
            best: dict[str, TiltakHit] = {}
            for u in chains.get(uid, (uid,)):
                for t in types_at.get(u, ()):
                    best.setdefault(t, hits[t, u])
            if best:
                self.tiltak_best[uid] = best

        self.barn: dict[str, str] = {b.child_id: b.value for b in r.barn}  # R10
        self.grupper: dict[str, str] = {g.group_id: g.value for g in r.grupper}  # R11
        self.mva_codes: frozenset[str] = frozenset(r.mva.codes)  # R12
        self.mva_by_category: dict[str, str] = {m.category: m.code for m in r.mva.by_category}
        self.default_vat_code: str | None = snapshot.settings.default_vat_code

    @property
    def snapshot(self) -> RegisterSnapshot:
        """The snapshot in force, whole: for R13 against a newer snapshot and for the tools.

        Read back from its compressed JSON on first use (0.7 ms for a municipality's
        registers) and kept from then on, which costs the memory the index saves: code
        that runs often reads the head instead (`version`, `published_at`,
        `published_by`, `test_tenant`, `settings`)."""
        if self._parsed is None:
            self._parsed = self.read_snapshot()
        return self._parsed

    def read_snapshot(self) -> RegisterSnapshot:
        """The snapshot in force, whole, read anew and not kept (`snapshot` keeps it)."""
        return RegisterSnapshot.model_validate_json(zlib.decompress(self._compressed))

    def tiltak_match(self, measure_type: str, org_unit_id: str) -> TiltakHit | None:
        """The best-ranked Tiltak match: (register type, unit, its distinct values) (R9, decided).

        Rank: the most specific register type, then the deepest unit. Prefixes are tried
        most specific first, and each unit's table holds, per register type, the entries
        at the deepest unit of its chain that names that type: so the first prefix that
        hits holds exactly the entries of the best rank (one (type, unit) pair per rank).
        More than one value there is an ambiguity for the caller to report.
        """
        best = self.tiltak_best.get(org_unit_id)
        if best is None:
            return None
        for prefix in type_prefixes(measure_type):
            hit = best.get(prefix)
            if hit is not None:
                return hit
        return None
