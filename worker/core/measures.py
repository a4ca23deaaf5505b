"""R9: measure types, when a measure is active, and which measure governs a payment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import lru_cache

from worker.contracts.payment_event import Measure

# Placement measures (institution, foster home, housing with follow-up) govern (R9).
PLACEMENT_TYPES = ("1", "2", "8.2")


# Cached: a tenant uses a few dozen codes, met on every payment. Bounded, since codes
# arrive in events.
@lru_cache(maxsize=4096)
def type_prefixes(code: str) -> tuple[str, ...]:
    """Every register type that matches `code`, most specific first (R9, decided).

    A register type matches a measure whose code equals it or starts with it followed by
    a dot: "2" matches "2.1"; "8" matches "8.2"; "8.2" does not match "8.3".
    >>> type_prefixes("2.1.3")
    ('2.1.3', '2.1', '2')
    """
    parts = code.split(".")
    return tuple(".".join(parts[:n]) for n in range(len(parts), 0, -1))


def type_matches(register_type: str, measure_type: str) -> bool:
    return measure_type == register_type or measure_type.startswith(register_type + ".")


def is_active(measure: Measure, on: date) -> bool:
    """Active means start <= payment date and (no end, or end >= payment date)."""
    return measure.start <= on and (measure.end is None or measure.end >= on)


@lru_cache(maxsize=4096)
def is_placement(measure_type: str) -> bool:
    return any(type_matches(p, measure_type) for p in PLACEMENT_TYPES)


def governing_measure(
    measures: Sequence[Measure], own_measure_id: str | None, payment_date: date
) -> Measure | None:
    """The measure whose type decides Tiltak values for this payment (R9).

    An active placement measure governs over the payment's own measure. Several active
    placement measures: the latest start wins, then the smallest measure_id. With no
    active placement, the payment's own measure governs — whatever its dates, since a
    payment may be paid after its measure ended (decided). None when neither exists.
    """
    best: Measure | None = None
    for m in measures:
        # `is_active`, written out: this runs for every measure of every payment.
        if not (
            is_placement(m.type)
            and m.start <= payment_date
            and (m.end is None or m.end >= payment_date)
        ):
            continue
        if (
            best is None
            or m.start > best.start
            or (m.start == best.start and m.measure_id < best.measure_id)
        ):
            best = m
    if best is not None:
        return best
    if own_measure_id is None:
        return None
    for m in measures:
        if m.measure_id == own_measure_id:
            return m
    return None
