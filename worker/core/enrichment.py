"""R6–R12, R15: the accounting string of one Betalt payment, or every problem with it.

`evaluate` is pure: same event and snapshot, same answer. It neither reads a clock nor
logs; it never raises on business data. Rules are applied in the order domain.md states
them, one dimension at a time in position order, VAT last.
"""

from __future__ import annotations

from worker.contracts.payment_event import Measure, PaymentStatusEvent
from worker.contracts.register_snapshot import Dimension, Source
from worker.contracts.rejection import Problem
from worker.core import messages
from worker.core.measures import governing_measure
from worker.core.outcome import Enriched, Rejected
from worker.core.posting import voucher_lines
from worker.core.register_index import RegisterIndex


def evaluate(event: PaymentStatusEvent, index: RegisterIndex | None) -> Enriched | Rejected:
    """Decide one Betalt payment against its tenant's register index (None: no valid snapshot)."""
    if index is None:
        return Rejected(None, (messages.unknown_tenant(event.tenant_id),))
    return _Evaluation(event, index).run()


class _Evaluation:
    """One payment's evaluation; caches what several dimensions may share."""

    __slots__ = ("event", "governing", "governing_known", "index", "problems", "valued_groups")

    def __init__(self, event: PaymentStatusEvent, index: RegisterIndex) -> None:
        self.event = event
        self.index = index
        self.problems: list[Problem] = []
        self.governing: Measure | None = None
        self.governing_known = False  # computed on first use: only Tiltak needs it
        self.valued_groups: list[str] | None = None  # likewise, only Grupper

    def run(self) -> Enriched | Rejected:
        index = self.index
        dimensions: dict[str, str] = {}
        fields: dict[str, str] = {}
        for dim in index.dimensions:
            value = self._dimension_value(dim)
            if value is not None:
                dimensions[str(dim.position)] = value
                fields[dim.xledger_field] = value
        vat_code = self._vat_code()
        if self.problems:
            return Rejected(index.version, tuple(self.problems))
        assert vat_code is not None  # no VAT problem means a code was found
        lines = voucher_lines(self.event, index.settings, fields, vat_code)
        return Enriched(index.version, dimensions, vat_code, lines, index.settings.url)

    # R6: each position names an ordered list of sources; the first that yields a value wins.
    def _dimension_value(self, dim: Dimension) -> str | None:
        problems_before = len(self.problems)
        if dim.position == self.index.grupper_position:
            # R11 holds whatever the source order: a conflict stops the payment even when
            # an earlier source would have given this dimension a value.
            self._check_group_conflict(dim)
        value: str | None = None
        for source in dim.sources:
            value = self._source_value(source, dim)
            if value is not None or len(self.problems) > problems_before:
                break
        if value is None and len(self.problems) == problems_before and dim.required:
            if dim.position == 1:
                self.problems.append(messages.missing_account(self.event.payment.category))
            else:
                self.problems.append(
                    messages.missing_dimension_value(dim.position, dim.name, dim.sources)
                )
        return value if len(self.problems) == problems_before else None

    def _source_value(self, source: Source, dim: Dimension) -> str | None:
        p = self.event.payment
        index = self.index
        if source is Source.BETALINGSTYPE:  # R7
            return index.accounts.get(p.category)
        if source is Source.TILHORIGHET:  # R8
            if p.org_unit_id not in index.unit_value:
                self.problems.append(
                    messages.unknown_org_unit(dim.position, dim.name, p.org_unit_id)
                )
                return None
            return index.unit_value[p.org_unit_id]
        if source is Source.TILTAK:  # R9
            return self._tiltak_value(dim)
        if source is Source.BARN:  # R10
            return index.barn.get(p.child_id)
        if source is Source.GRUPPER:  # R11
            valued = self._valued_groups()
            return index.grupper[valued[0]] if len(valued) == 1 else None
        raise AssertionError(f"unhandled source {source}")  # pragma: no cover

    def _tiltak_value(self, dim: Dimension) -> str | None:
        p = self.event.payment
        index = self.index
        if p.org_unit_id not in index.unit_chain:
            self.problems.append(messages.unknown_org_unit(dim.position, dim.name, p.org_unit_id))
            return None
        if not self.governing_known:
            self.governing = governing_measure(
                self.event.child.measures, p.measure_id, p.payment_date
            )
            self.governing_known = True
        if self.governing is None:
            return None
        match = index.tiltak_match(self.governing.type, p.org_unit_id)
        if match is None:
            return None
        register_type, unit, values = match
        if len(values) > 1:
            self.problems.append(
                messages.ambiguous_tiltak(dim.position, dim.name, register_type, unit, values)
            )
            return None
        return values[0]

    def _valued_groups(self) -> list[str]:
        if self.valued_groups is None:
            grupper = self.index.grupper
            self.valued_groups = sorted({g for g in self.event.child.group_ids if g in grupper})
        return self.valued_groups

    def _check_group_conflict(self, dim: Dimension) -> None:
        valued = self._valued_groups()
        if len(valued) > 1:  # decided: even when the values are equal
            self.problems.append(messages.group_conflict(dim.position, valued))

    # R12: the payment's own code, else the register's code for its category, else the default.
    def _vat_code(self) -> str | None:
        p = self.event.payment
        index = self.index
        code = p.vat_code or index.mva_by_category.get(p.category) or index.default_vat_code
        if code is None:
            self.problems.append(messages.missing_vat_code(p.category))
        elif index.mva_codes and code not in index.mva_codes:
            self.problems.append(messages.unknown_vat_code(code))
        return code
