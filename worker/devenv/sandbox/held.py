"""The sandbox's ledger (`XledgerSandbox.ledger()`, a demo's `--ledger-out`) as the lines the
ledger verdict judges (`worker/core/ledger_verdict.py`), grouped by payment: what the chaos
campaign and the integration tests hold the worker to (R14, R18)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.core.ledger_verdict import Key, Line, ext_identifier_parts


def held_lines(rows: Iterable[Mapping[str, Any]]) -> list[Line]:
    """One Line per stored line, doubles included, in the order the sandbox stored them."""
    return [
        Line(
            ext_id=str(row.get("extIdentifier")),
            account=row.get("account"),
            amount=_amount(row.get("amount")),
            posted_date=row.get("postedDate"),
            db_id=row.get("dbId"),
        )
        for row in rows
    ]


def lines_by_payment(lines: Iterable[Line]) -> dict[Key, list[Line]]:
    """The lines of each payment their external identifiers name (others are left out:
    the verdict reports them as strangers)."""
    out: dict[Key, list[Line]] = defaultdict(list)
    for line in lines:
        parts = ext_identifier_parts(line.ext_id)
        if parts is not None:
            out[parts[0]].append(line)
    return dict(out)


def _amount(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None  # not a number: the verdict does not sum what it cannot read
