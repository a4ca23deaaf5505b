"""Dates read from JSON take pydantic's own path, not `_parse_date` (issue 20: parsing
cheaper): it must take exactly the strings the Python path takes, as the same dates, and
an unreadable event must still be told in the Python path's words."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from tests.factories import event_dict, patch
from worker.contracts.reading import Unreadable, read_event
from worker.contracts.types import Amount, IsoDate, SignedAmount

DATE = TypeAdapter(IsoDate)
AMOUNT = TypeAdapter(Amount)
SIGNED = TypeAdapter(SignedAmount)


def _both(adapter: TypeAdapter[Any], value: object) -> tuple[object, object]:
    """(from JSON, from Python): the value read, or None when refused."""

    def attempt(read: Any, arg: object) -> object:
        try:
            return read(arg)
        except ValidationError:
            return None

    return attempt(adapter.validate_json, json.dumps(value)), attempt(
        adapter.validate_python, value
    )


ODD_DATES = [
    "2026-11-20",
    "2024-02-29",
    "2026-02-29",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "2026-1-1",
    "20261120",
    "2026/11/20",
    "2026-11-20T00:00:00",
    "2026-11-20T00:00:00Z",
    "2026-11-20Z",
    "2026-W47-5",
    "2026-324",
    "+2026-11-20",
    "-2026-11-20",
    " 2026-11-20",
    "2026-11-20 ",
    "2026-11-20\n",
    "2026-11-20\x00",
    "\uff12\uff10\uff12\uff16-\uff11\uff11-\uff12\uff10",  # fullwidth digits
    "\u0662\u0660\u0662\u0666-\u0661\u0661-\u0662\u0660",  # Arabic-Indic digits
    "494380800",  # a Unix time at midnight: pydantic's strict date would take it
    "1763596800",
    "",
    1763596800,
    0,
    1.5,
    True,
    None,
    [],
    {},
]


def test_odd_dates_are_taken_or_refused_alike_from_json_and_from_python() -> None:
    for value in ODD_DATES:
        from_json, from_python = _both(DATE, value)
        assert from_json == from_python, value
    assert _both(DATE, "2024-02-29") == (date(2024, 2, 29), date(2024, 2, 29))


def test_every_month_and_day_pair_is_judged_alike() -> None:
    for year in ("0000", "0001", "1900", "2000", "2024", "2026", "9999"):
        for month in range(100):
            for day in range(100):
                text = f"{year}-{month:02d}-{day:02d}"
                from_json, from_python = _both(DATE, text)
                assert from_json == from_python, text


@settings(max_examples=2000, deadline=None)
@given(
    st.text(alphabet="0123456789-T:Z+ .\n/\uff10\u0660", min_size=8, max_size=12)
    | st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
)
def test_generated_strings_are_judged_alike(text: str) -> None:
    from_json, from_python = _both(DATE, text)
    assert from_json == from_python


def test_amounts_are_judged_alike_from_json_and_from_python() -> None:
    for value in ("17210.00", "1.5", "0.01", "-5.00", "0", "1e3", " 1.00", "1.00\n", 1.5, 100):
        assert _both(SIGNED, value)[0] == _both(SIGNED, value)[1], value
        assert _both(AMOUNT, value)[0] == _both(AMOUNT, value)[1], value
    assert str(AMOUNT.validate_json('"1.5"')) == "1.50"  # quantized to cents
    assert str(SIGNED.validate_json('"-17210"')) == "-17210.00"


def test_an_unreadable_event_is_still_told_in_the_python_path_s_words() -> None:
    """What an operator reads in `dlq.error_message`: as before the fast path."""
    cases = {
        ("payment.payment_date", "2026-11-31"): "Value error, day is out of range for month",
        ("payment.payment_date", "20.11.2026"): "Value error, date must be an ISO date",
        ("payment.amount", "0.00"): "Value error, amount must be greater than 0",
        ("payment.amount", 17210.0): 'Value error, amount must be a decimal string such as "',
    }
    for (path, value), words in cases.items():
        got = read_event(json.dumps(patch(event_dict(), path, value)).encode())
        assert isinstance(got, Unreadable)
        assert got.error.startswith(f"{path}: {words}"), got.error
