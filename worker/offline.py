"""`python -m worker enrich`: events evaluated against snapshots, no broker, no network.

One JSON line out per line in, in input order (contracts.md, last section).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.contracts.payment_event import PaymentStatusEvent
from worker.contracts.reading import Unreadable, describe, read_event
from worker.contracts.register_snapshot import RegisterSnapshot
from worker.core import Enriched, evaluate
from worker.core.endpoints import UrlPolicy
from worker.core.intake import Intake, intake
from worker.core.register_book import Offer, RegisterBook
from worker.core.snapshot_record import refusal_text


class SnapshotFileError(Exception):
    """The snapshot file cannot be used at all."""


def read_snapshot_file(
    path: Path,
) -> tuple[list[tuple[dict[str, Any], RegisterSnapshot]], list[str]]:
    """One snapshot or a list, each read as a RegisterSnapshot (its JSON kept beside it).

    Returns the readable ones and a line per unreadable one. Raises SnapshotFileError
    when the file cannot be read or is not JSON.
    """
    try:
        raw = json.loads(path.read_bytes())
    except OSError as exc:
        raise SnapshotFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotFileError(f"{path} is not JSON: {exc}") from None
    items = raw if isinstance(raw, list) else [raw]
    notes: list[str] = []
    snapshots: list[tuple[dict[str, Any], RegisterSnapshot]] = []
    for i, item in enumerate(items, start=1):
        try:
            snapshots.append((item, RegisterSnapshot.model_validate(item)))
        except ValidationError as exc:
            notes.append(f"snapshot #{i} refused: {describe(exc)}")
    return snapshots, notes


def load_book(path: Path, policy: UrlPolicy | None = None) -> tuple[RegisterBook, list[str]]:
    """Read one snapshot or a list; the highest valid version of each tenant wins.

    Returns the book and a line per refused snapshot. Raises SnapshotFileError when the
    file cannot be read or is not JSON.
    """
    snapshots, notes = read_snapshot_file(path)
    book = RegisterBook(policy)
    # Each tenant's snapshots in version order, so R13 is judged against the one before.
    for _, snap in sorted(snapshots, key=lambda p: (p[1].tenant_id, p[1].version)):
        offer = book.offer(snap)
        if not offer.accepted:
            notes.append(refusal_line(offer))
    return book, notes


def refusal_line(offer: Offer) -> str:
    reasons = "; ".join(refusal_text(r) for r in offer.refusals)
    return f"snapshot {offer.tenant_id} v{offer.version} refused: {reasons}"


def outcome_record(event: PaymentStatusEvent, book: RegisterBook) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": event.event_id,
        "payment_id": event.payment_id,
        "tenant_id": event.tenant_id,
    }
    result = evaluate(event, book.index(event.tenant_id))
    if isinstance(result, Enriched):
        return base | {
            "outcome": "submission",
            "dimensions": result.dimensions,
            "vat_code": result.vat_code,
            "lines": [line.to_json() for line in result.lines],
        }
    return base | {
        "outcome": "rejection",
        "reason": str(result.reason),
        "problems": [p.model_dump(mode="json") for p in result.problems],
    }


def enrich_lines(lines: Iterable[str | bytes], book: RegisterBook) -> Iterator[dict[str, Any]]:
    handled: set[tuple[str, str]] = set()
    for line in lines:
        event = read_event(line.rstrip(b"\r\n") if isinstance(line, bytes) else line.rstrip("\r\n"))
        if isinstance(event, Unreadable):
            yield {
                "event_id": event.event_id,
                "payment_id": event.payment_id,
                "tenant_id": event.tenant_id,
                "outcome": "invalid",
                "error": event.error,
            }
            continue
        ids = {
            "event_id": event.event_id,
            "payment_id": event.payment_id,
            "tenant_id": event.tenant_id,
        }
        key = (event.tenant_id, event.payment_id)
        step = intake(event, key in handled)  # R17
        if step is Intake.IGNORED:
            yield ids | {"outcome": "ignored", "status": str(event.status)}
        elif step is Intake.DUPLICATE:
            yield ids | {"outcome": "duplicate"}
        else:
            handled.add(key)
            yield outcome_record(event, book)
