"""Xledger's GraphQL schema (the SDL the client uses too) with its scalars implemented."""

from __future__ import annotations

import contextlib
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLScalarType,
    GraphQLSchema,
    ValueNode,
    build_schema,
)
from graphql.language import FloatValueNode, IntValueNode, StringValueNode

_CENT = Decimal("0.01")
_DECIMAL_TEXT = re.compile(r"-?\d+(\.\d+)?")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
        if value.is_finite() and value == value.quantize(_CENT):
            return value.quantize(_CENT)
    except InvalidOperation:
        pass
    raise GraphQLError(f"Decimal must be a finite number with at most 2 decimals: {text!r}.")


def _parse_decimal(value: Any) -> Decimal:
    # bool is an int in Python; a boolean amount is a type error, as in any GraphQL server.
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise GraphQLError(f"Decimal cannot represent a non-numeric value: {value!r}.")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise GraphQLError(f"Decimal cannot represent {value!r}: expected a decimal string.")
    # repr of a float is its shortest exact-looking form: 0.1 + 0.2 is refused, not rounded.
    return _decimal(repr(value) if isinstance(value, float) else str(value))


def _parse_decimal_literal(node: ValueNode, _variables: Any = None) -> Decimal:
    if isinstance(node, StringValueNode):
        return _parse_decimal(node.value)
    if isinstance(node, IntValueNode | FloatValueNode):
        return _decimal(node.value)
    raise GraphQLError("Decimal must be a string or a number.", node)


def _serialize_decimal(value: Any) -> str:
    return f"{_parse_decimal(value):.2f}"


def _parse_date(value: Any) -> date:
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(value)
    raise GraphQLError(f"Date must be an ISO date YYYY-MM-DD: {value!r}.")


def _parse_date_literal(node: ValueNode, _variables: Any = None) -> date:
    if isinstance(node, StringValueNode):
        return _parse_date(node.value)
    raise GraphQLError("Date must be a string YYYY-MM-DD.", node)


def _serialize_date(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else _parse_date(value).isoformat()


_SCALAR_CODECS = (
    "serialize",
    "parse_value",
    "parse_literal",
    "coerce_output_value",
    "coerce_input_value",
    "coerce_input_literal",
    "value_to_literal",
)


def _implement(schema: GraphQLSchema, name: str, serialize: Any, value: Any, literal: Any) -> None:
    """Give an SDL scalar its rules, under graphql-core 3.2 and 3.3 alike.

    build_schema makes pass-through scalars; 3.3 renamed the hooks (coerce_*), so the
    constructor of a template scalar decides which attributes to set, and we copy them.
    """
    scalar = schema.type_map[name]
    assert isinstance(scalar, GraphQLScalarType)
    template = GraphQLScalarType(
        name, serialize=serialize, parse_value=value, parse_literal=literal
    )
    for attr in _SCALAR_CODECS:
        if attr in vars(template):
            setattr(scalar, attr, vars(template)[attr])


def xledger_schema() -> GraphQLSchema:
    """Our SDL (worker/xledger/schema.graphql, which the client is written to) with the
    Decimal and Date scalars implemented; a new schema each call."""
    sdl = resources.files("worker.xledger").joinpath("schema.graphql").read_text("utf-8")
    schema = build_schema(sdl)
    _implement(schema, "Decimal", _serialize_decimal, _parse_decimal, _parse_decimal_literal)
    _implement(schema, "Date", _serialize_date, _parse_date, _parse_date_literal)
    return schema
