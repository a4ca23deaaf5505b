"""A valid snapshot, precomputed so that evaluating one payment does no scan over a register.

Built once per snapshot version; every lookup afterwards is a dict access over at most
(levels × type prefixes) keys.
"""

from __future__ import annotations

from worker.contracts.register_snapshot import Dimension, RegisterSnapshot, Source, TenantSettings
from worker.core.measures import type_prefixes


class RegisterIndex:
    __slots__ = (
        "accounts",
        "barn",
        "default_vat_code",
        "dimensions",
        "grupper",
        "grupper_position",
        "mva_by_category",
        "mva_codes",
        "settings",
        "snapshot",
        "tenant_id",
        "tiltak",
        "unit_chain",
        "unit_value",
        "version",
    )

    def __init__(self, snapshot: RegisterSnapshot) -> None:
        """`snapshot` must already have passed `check_snapshot`."""
        r = snapshot.registers
        self.snapshot = snapshot
        self.tenant_id = snapshot.tenant_id
        self.version = snapshot.version
        self.settings: TenantSettings = snapshot.settings
        self.dimensions: tuple[Dimension, ...] = tuple(
            sorted(snapshot.dimensions, key=lambda d: d.position)
        )
        # R11 applies only where some dimension uses Grupper; the conflict is reported once,
        # on the first such dimension.
        self.grupper_position: int | None = next(
            (d.position for d in self.dimensions if Source.GRUPPER in d.sources), None
        )

        self.accounts: dict[str, str] = {e.category: e.value for e in r.betalingstype}  # R7

        # R8: each unit's chain (itself first, then its ancestors) and its inherited value.
        parents = {u.org_unit_id: u.parent_id for u in r.tilhorighet.units}
        self.unit_chain: dict[str, tuple[str, ...]] = {}
        for uid in parents:
            chain = [uid]
            parent = parents[uid]
            while parent is not None:
                chain.append(parent)
                parent = parents[parent]
            self.unit_chain[uid] = tuple(chain)
        own = {v.org_unit_id: v.value for v in r.tilhorighet.values}
        self.unit_value: dict[str, str | None] = {
            uid: next((own[u] for u in chain if u in own), None)
            for uid, chain in self.unit_chain.items()
        }

        # R9: (register type, unit) → the distinct values of the entries naming both.
        tiltak: dict[tuple[str, str], set[str]] = {}
        for entry in r.tiltak:
            for t in entry.measure_types:
                for uid in entry.org_unit_ids:
                    tiltak.setdefault((t, uid), set()).add(entry.value)
        self.tiltak: dict[tuple[str, str], tuple[str, ...]] = {
            k: tuple(sorted(v)) for k, v in tiltak.items()
        }

        self.barn: dict[str, str] = {b.child_id: b.value for b in r.barn}  # R10
        self.grupper: dict[str, str] = {g.group_id: g.value for g in r.grupper}  # R11
        self.mva_codes: frozenset[str] = frozenset(r.mva.codes)  # R12
        self.mva_by_category: dict[str, str] = {m.category: m.code for m in r.mva.by_category}
        self.default_vat_code: str | None = snapshot.settings.default_vat_code

    def tiltak_match(
        self, measure_type: str, org_unit_id: str
    ) -> tuple[str, str, tuple[str, ...]] | None:
        """The best-ranked Tiltak match: (register type, unit, its distinct values) (R9, decided).

        Rank: the most specific register type, then the deepest unit. Prefixes are tried
        most specific first and the unit chain deepest first, so the first key that hits
        holds exactly the entries of the best rank (one (type, unit) pair per rank). More
        than one value there is an ambiguity for the caller to report.
        """
        chain = self.unit_chain.get(org_unit_id, (org_unit_id,))
        for prefix in type_prefixes(measure_type):
            for uid in chain:
                hit = self.tiltak.get((prefix, uid))
                if hit:
                    return prefix, uid, hit
        return None
