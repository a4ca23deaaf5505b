"""Field types shared by the records: amounts as decimal strings, ISO dates, the base model."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import CoreSchema, core_schema

SchemaVersion = Literal[1]

_AMOUNT = re.compile(r"^-?\d{1,15}(\.\d{1,2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


_CENTS = Decimal("0.01")
_match_amount = _AMOUNT.match


# Amounts and dates are read on every event (twice for a posted one: the event, then its
# submission), so their validators are written for it: amounts in one plain validator
# (no second pass by pydantic's decimal schema), dates from JSON in pydantic's own code.
def _parse_amount(value: Any) -> Decimal:
    # Amounts are decimal strings on the wire, never floats (contracts.md): a float has
    # already lost cents by the time it reaches us, so it is refused, not rounded.
    if value.__class__ is str or isinstance(value, str):
        text = value
    elif isinstance(value, Decimal):
        text = format(value, "f")
    else:
        raise ValueError('amount must be a decimal string such as "17210.00"')
    if not _match_amount(text):
        raise ValueError(f"amount {text!r} is not a decimal with at most two decimals")
    try:
        return Decimal(text).quantize(_CENTS)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
        raise ValueError(f"amount {text!r} is not a number") from exc


def format_amount(value: Decimal) -> str:
    return f"{value:.2f}"


def _parse_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError("date must be an ISO date YYYY-MM-DD")
    return date.fromisoformat(value)


_DATE_ASCII = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class _DateFromJsonInRust:
    """From JSON, an ISO date is read by pydantic's own code, with no call into Python:
    ASCII YYYY-MM-DD, then a real calendar date. It takes exactly the strings
    `_parse_date` takes (whose `\\d` and `fromisoformat` come to the same: pinned by
    tests/contracts/test_fast_validators.py); its refusals are worded by pydantic, and
    `read_event` words an unreadable event's errors in Python mode, as before. Python
    mode (dicts, `model_validate`) keeps `_parse_date`, which also takes date objects."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.json_or_python_schema(
            json_schema=core_schema.chain_schema(
                [
                    core_schema.str_schema(pattern=_DATE_ASCII),
                    core_schema.date_schema(),
                ]
            ),
            python_schema=handler(source),
        )


SignedAmount = Annotated[
    Decimal,
    PlainValidator(_parse_amount),
    PlainSerializer(format_amount, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _AMOUNT.pattern, "examples": ["-17210.00"]}),
]
"""A decimal string with at most two decimals; negative allowed (credit lines)."""


def _positive_amount(value: Any) -> Decimal:
    amount = _parse_amount(value)
    if amount <= 0:
        raise ValueError("amount must be greater than 0")
    return amount


Amount = Annotated[
    Decimal,
    PlainValidator(_positive_amount),
    PlainSerializer(format_amount, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _AMOUNT.pattern,
            "description": "greater than 0",
            "examples": ["17210.00"],
        }
    ),
]
"""A payment amount: a decimal string, at most two decimals, greater than zero."""

IsoDate = Annotated[
    date,
    BeforeValidator(_parse_date),
    _DateFromJsonInRust,
    WithJsonSchema({"type": "string", "format": "date"}),
]
Timestamp = AwareDatetime
Code = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Record(BaseModel):
    """Base for every wire record: unknown fields are refused, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
