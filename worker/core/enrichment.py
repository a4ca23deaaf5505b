"""R6–R12, R15: the accounting string of one Betalt payment, or every problem with it.

`evaluate` is pure: same event and snapshot, same answer. It neither reads a clock nor
logs; it never raises on business data. Rules are applied in the order domain.md states
them, one dimension at a time in position order, VAT last.

It runs once per payment on the enrich stage's hot path, so it is one function over
local names (what several dimensions share, the governing measure and the child's valued
groups, is worked out on first use), with the index's per-snapshot plan of dimensions
(`RegisterIndex.plan`); the rare paths, the problems, are the `messages` builders.
"""

from __future__ import annotations

from worker.contracts.payment_event import Measure, PaymentStatusEvent
from worker.contracts.register_snapshot import Source
from worker.contracts.rejection import Problem
from worker.core import messages
from worker.core.measures import governing_measure
from worker.core.outcome import Enriched, Rejected
from worker.core.posting import voucher_lines
from worker.core.register_index import RegisterIndex

_BETALINGSTYPE = Source.BETALINGSTYPE
_TILHORIGHET = Source.TILHORIGHET
_TILTAK = Source.TILTAK
_BARN = Source.BARN
_GRUPPER = Source.GRUPPER
_NOT_YET: list[str] = []  # a marker: "not worked out yet" (identity, never mutated)


def evaluate(event: PaymentStatusEvent, index: RegisterIndex | None) -> Enriched | Rejected:
    """Decide one Betalt payment against its tenant's register index (None: no valid snapshot)."""
    if index is None:
        return Rejected(None, (messages.unknown_tenant(event.tenant_id),))
    p = event.payment
    problems: list[Problem] = []
    dimensions: dict[str, str] = {}
    fields: dict[str, str] = {}
    governing: Measure | None = None
    governing_known = False  # only Tiltak needs the governing measure
    valued: list[str] = _NOT_YET  # only Grupper needs the child's valued groups

    for dim in index.plan:
        # R6: each position names an ordered list of sources; the first that yields a
        # value wins.
        before = len(problems)
        if dim.checks_groups:
            # R11 holds whatever the source order: a conflict stops the payment even when
            # an earlier source would have given this dimension a value.
            if valued is _NOT_YET:
                valued = _valued_groups(event, index)
            if len(valued) > 1:  # decided: even when the values are equal
                problems.append(messages.group_conflict(dim.position, valued))
        value: str | None = None
        for source in dim.sources:
            if source is _BETALINGSTYPE:  # R7
                value = index.accounts.get(p.category)
            elif source is _TILHORIGHET:  # R8: the unit's own value, else its nearest ancestor's
                unit_value = index.unit_value
                if p.org_unit_id in unit_value:
                    value = unit_value[p.org_unit_id]
                else:
                    problems.append(
                        messages.unknown_org_unit(dim.position, dim.name, p.org_unit_id)
                    )
            elif source is _TILTAK:  # R9
                if p.org_unit_id not in index.unit_value:
                    problems.append(
                        messages.unknown_org_unit(dim.position, dim.name, p.org_unit_id)
                    )
                else:
                    if not governing_known:  # an active placement measure governs
                        governing = governing_measure(
                            event.child.measures, p.measure_id, p.payment_date
                        )
                        governing_known = True
                    if governing is not None:
                        match = index.tiltak_match(governing.type, p.org_unit_id)
                        if match is not None:
                            register_type, unit, values = match
                            if len(values) > 1:
                                problems.append(
                                    messages.ambiguous_tiltak(
                                        dim.position, dim.name, register_type, unit, values
                                    )
                                )
                            else:
                                value = values[0]
            elif source is _BARN:  # R10
                value = index.barn.get(p.child_id)
            elif source is _GRUPPER:  # R11: only the child's one valued group gives a value
                if valued is _NOT_YET:
                    valued = _valued_groups(event, index)
                if len(valued) == 1:
                    value = index.grupper[valued[0]]
            else:  # pragma: no cover
                raise AssertionError(f"unhandled source {source}")
            if value is not None or len(problems) > before:
                break
        if len(problems) > before:
            continue
        if value is not None:
            dimensions[dim.key] = value
            fields[dim.xledger_field] = value
        elif dim.required:
            if dim.position == 1:
                problems.append(messages.missing_account(p.category))
            else:
                problems.append(
                    messages.missing_dimension_value(dim.position, dim.name, dim.sources)
                )

    # R12: the payment's own code, else the register's code for its category, else the
    # tenant's default; a code outside the register's list of valid codes is refused.
    vat_code = p.vat_code or index.mva_by_category.get(p.category) or index.default_vat_code
    if vat_code is None:
        problems.append(messages.missing_vat_code(p.category))
    elif index.mva_codes and vat_code not in index.mva_codes:
        problems.append(messages.unknown_vat_code(vat_code))

    if problems:
        return Rejected(index.version, tuple(problems))
    assert vat_code is not None  # no VAT problem means a code was found
    lines = voucher_lines(event, index.settings, fields, vat_code)  # R18
    settings = index.settings
    return Enriched(index.version, dimensions, vat_code, lines, settings.url, settings.token_ref)


def _valued_groups(event: PaymentStatusEvent, index: RegisterIndex) -> list[str]:
    """R11: the child's groups that have a value in Grupper, sorted."""
    group_ids = event.child.group_ids
    if not group_ids:
        return []
    grupper = index.grupper
    return sorted({g for g in group_ids if g in grupper})
