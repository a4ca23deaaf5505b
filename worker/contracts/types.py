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
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

SchemaVersion = Literal[1]

_AMOUNT = re.compile(r"^-?\d{1,15}(\.\d{1,2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_amount(value: Any) -> Decimal:
    # Amounts are decimal strings on the wire, never floats (contracts.md): a float has
    # already lost cents by the time it reaches us, so it is refused, not rounded.
    if isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError('amount must be a decimal string such as "17210.00"')
    if not _AMOUNT.match(text):
        raise ValueError(f"amount {text!r} is not a decimal with at most two decimals")
    try:
        return Decimal(text).quantize(Decimal("0.01"))
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


SignedAmount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    PlainSerializer(format_amount, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _AMOUNT.pattern, "examples": ["-17210.00"]}),
]
"""A decimal string with at most two decimals; negative allowed (credit lines)."""


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("amount must be greater than 0")
    return value


def _positive_amount(value: Any) -> Decimal:
    return _positive(_parse_amount(value))


Amount = Annotated[
    Decimal,
    BeforeValidator(_positive_amount),
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

IsoDate = Annotated[date, BeforeValidator(_parse_date)]
Timestamp = AwareDatetime
Code = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Record(BaseModel):
    """Base for every wire record: unknown fields are refused, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
