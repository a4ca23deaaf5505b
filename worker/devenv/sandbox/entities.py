"""The sandbox's Xledger entities: one per tenant, made from a register snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.contracts.register_snapshot import RegisterSnapshot, Source

DEFAULT_CURRENCIES = frozenset({"NOK", "SEK", "DKK", "EUR", "USD"})


@dataclass
class Entity:
    """One Xledger entity (a tenant's company) and the codes it knows."""

    name: str
    owner_db_id: int
    accounts: set[str]
    gl_objects: set[str]
    projects: set[str]
    tax_rules: set[str]
    bank_accounts: set[int]
    currencies: set[str] = field(default_factory=lambda: set(DEFAULT_CURRENCIES))
    credits: int | None = None  # None: unlimited; each admitted request costs 1


def entity_from_snapshot(snapshot: RegisterSnapshot, owner_db_id: int) -> Entity:
    """An entity knowing every code the tenant's registers can produce."""
    reg = snapshot.registers
    by_source: dict[Source, set[str]] = {
        Source.BETALINGSTYPE: {e.value for e in reg.betalingstype},
        Source.TILHORIGHET: {v.value for v in reg.tilhorighet.values},
        Source.TILTAK: {t.value for t in reg.tiltak},
        Source.BARN: {b.value for b in reg.barn},
        Source.GRUPPER: {g.value for g in reg.grupper},
    }
    dimension_values: set[str] = set()
    for source, values in by_source.items():
        if source is not Source.BETALINGSTYPE:
            dimension_values |= values
    accounts = by_source[Source.BETALINGSTYPE] | {snapshot.settings.counter_account}
    gl_objects = set(dimension_values)
    projects = set(dimension_values)
    # Any source may feed any field, so each dimension's codes also go to its own field.
    for dim in snapshot.dimensions:
        codes = set().union(*(by_source[s] for s in dim.sources))
        if dim.xledger_field == "account":
            accounts |= codes
        elif dim.xledger_field == "project":
            projects |= codes
        else:
            gl_objects |= codes
    tax_rules = set(reg.mva.codes) | {c.code for c in reg.mva.by_category}
    if snapshot.settings.default_vat_code:
        tax_rules.add(snapshot.settings.default_vat_code)
    pkey = snapshot.settings.bank_account_pkey
    bank_accounts = {int(pkey)} if pkey and pkey.isdigit() else set()
    return Entity(
        name=snapshot.tenant_id,
        owner_db_id=owner_db_id,
        accounts=accounts,
        gl_objects=gl_objects,
        projects=projects,
        tax_rules=tax_rules,
        bank_accounts=bank_accounts,
    )
