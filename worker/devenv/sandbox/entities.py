"""The sandbox's Xledger entities: one per tenant, made from a register snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.contracts.register_snapshot import RegisterSnapshot, Source

DEFAULT_CURRENCIES = frozenset({"NOK", "SEK", "DKK", "EUR", "USD"})
# A tenant without a Bankkonti-pkey: its Motkonto is linked to this one bank account.
SOLE_BANK_ACCOUNT_DB_ID = 700_001


@dataclass
class DimensionKind:
    """The object kind set up in one glObject field (Ansvar in glObject1, say), and the
    codes of its values."""

    name: str
    values: set[str]


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
    # The entity's setup as Xledger's read queries show it (xledger.md, "Reading the
    # entity's setup"; `setup_resolvers`). The object kind in each glObject field, by
    # field; a field without one takes `gl_objects` (an entity made without a setup).
    dimension_kinds: dict[str, DimensionKind] = field(default_factory=dict)
    # Bank accounts (dbId: a Bankkonti-pkey, R4) → the GL account each is linked to.
    bank_account_links: dict[int, str] = field(default_factory=dict)

    def field_values(self, name: str) -> set[str]:
        """The codes the glObject field `name` accepts."""
        kind = self.dimension_kinds.get(name)
        return kind.values if kind is not None else self.gl_objects

    def bank_account_ids(self) -> set[int]:
        """Every bank account of the entity, linked to a GL account or not."""
        return self.bank_accounts | set(self.bank_account_links)


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
    kinds: dict[str, DimensionKind] = {}
    for dim in snapshot.dimensions:
        codes = set().union(*(by_source[s] for s in dim.sources))
        if dim.xledger_field == "account":
            accounts |= codes
        elif dim.xledger_field == "project":
            projects |= codes
        else:
            gl_objects |= codes
            # The field is set up with an object kind named for the dimension: it holds
            # exactly the codes the dimension's registers give.
            kinds[dim.xledger_field] = DimensionKind(dim.name, set(codes))
    tax_rules = set(reg.mva.codes) | {c.code for c in reg.mva.by_category}
    if snapshot.settings.default_vat_code:
        tax_rules.add(snapshot.settings.default_vat_code)
    pkey = snapshot.settings.bank_account_pkey
    bank_accounts = {int(pkey)} if pkey and pkey.isdigit() else set()
    counter = snapshot.settings.counter_account
    if bank_accounts:
        # R4: a tenant names a pkey because its Motkonto is linked to several bank
        # accounts; a second one is linked to it, so an empty pkey is what it would miss.
        [given] = bank_accounts
        links = {given: counter, given + 1: counter}
    else:
        links = {SOLE_BANK_ACCOUNT_DB_ID: counter}
    return Entity(
        name=snapshot.tenant_id,
        owner_db_id=owner_db_id,
        accounts=accounts,
        gl_objects=gl_objects,
        projects=projects,
        tax_rules=tax_rules,
        bank_accounts=bank_accounts,
        dimension_kinds=kinds,
        bank_account_links=links,
    )
