"""The wire records: strict where the contract is strict; schemas on disk match the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.factories import event_dict, patch
from worker import schemas
from worker.contracts import DlqHeaders, PaymentStatusEvent

ROOT = Path(__file__).resolve().parents[2]


def parse(d: dict) -> PaymentStatusEvent:
    return PaymentStatusEvent.model_validate_json(json.dumps(d))


def test_contract_example_event_parses() -> None:
    e = parse(event_dict())
    assert str(e.payment.amount) == "17210.00"
    assert json.loads(e.model_dump_json())["payment"]["amount"] == "17210.00"


@pytest.mark.parametrize("amount", [17210.0, 17210, "17210.001", "0.00", "-5.00", "1e3", "", "NaN"])
def test_amount_must_be_positive_decimal_string_with_two_places(amount: object) -> None:
    with pytest.raises(ValidationError):
        parse(patch(event_dict(), "payment.amount", amount))


@pytest.mark.parametrize("amount", ["1", "1.5", "0.01", "999999.99"])
def test_amount_accepts_up_to_two_decimals(amount: str) -> None:
    assert parse(patch(event_dict(), "payment.amount", amount)).payment.amount > 0


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("status", "Utbetalt"),
        ("schema_version", 2),
        ("payment.payment_date", "20.11.2026"),
        ("payment.payment_date", 1763600000),
        ("occurred_at", "2026-11-20T10:15:00"),  # no offset
        ("payment.currency", "nok"),
        ("child.measures", [{"measure_id": "T", "type": "fosterhjem", "start": "2026-01-01"}]),
    ],
)
def test_invalid_fields_are_refused(path: str, value: object) -> None:
    with pytest.raises(ValidationError):
        parse(patch(event_dict(), path, value))


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse(patch(event_dict(), "payment.iban", "NO93"))


def test_optional_fields_may_be_absent() -> None:
    d = event_dict()
    for key in ("vat_code", "measure_id", "text"):
        del d["payment"][key]
    d["child"] = {"measures": [], "group_ids": []}
    e = parse(d)
    assert e.payment.vat_code is None and e.payment.measure_id is None


def test_dlq_headers_round_trip_through_kafka_headers() -> None:
    h = DlqHeaders.model_validate(
        {
            "dlq.reason": "invalid",
            "dlq.error_class": "ValidationError",
            "dlq.error_message": "status: bad",
            "dlq.stage": "enrich",
            "dlq.original_topic": "flyt.payment-status.v1",
            "dlq.original_partition": 3,
            "dlq.original_offset": 42,
            "dlq.attempts": 1,
            "dlq.first_failed_at": "2026-11-20T10:00:00+00:00",
            "dlq.last_failed_at": "2026-11-20T10:00:00+00:00",
        }
    )
    headers = h.to_kafka()
    assert {k for k, _ in headers} <= set(DlqHeaders.model_json_schema(by_alias=True)["properties"])
    assert DlqHeaders.from_kafka([("trace", b"x"), *headers]) == h


def test_schemas_on_disk_match_the_models() -> None:
    rendered = schemas.render()
    on_disk = {p.name: p.read_text("utf-8") for p in (ROOT / "schemas").glob("*.json")}
    assert set(on_disk) == set(rendered), "run `make schemas`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is stale: run `make schemas`"


def test_the_fast_submission_bytes_parse_to_the_submission_the_model_would_write() -> None:
    """The enrich stage writes submissions without building the model (its hot path):
    the bytes must read back as the very Submission `model_dump_json` would have written."""
    from datetime import UTC, datetime

    from worker.contracts import PaymentStatusEvent, RegisterSnapshot, Submission
    from worker.core import Enriched, evaluate
    from worker.core.register_book import RegisterBook
    from worker.demo.events import generate_events
    from worker.demo.snapshots import demo_snapshot_dicts

    book = RegisterBook()
    for snap in demo_snapshot_dicts():
        book.offer(RegisterSnapshot.model_validate(snap))
    now = datetime(2026, 11, 20, 10, 15, 0, 123456, tzinfo=UTC)
    seen = 0
    for raw in generate_events(300, seed=77):
        event_json = json.dumps(raw, ensure_ascii=False, indent=1).encode()  # as Flyt wrote it
        event = PaymentStatusEvent.model_validate_json(event_json)
        result = evaluate(event, book.index(event.tenant_id))
        if event.status != "Betalt" or not isinstance(result, Enriched):
            continue
        fast = Submission.model_validate_json(result.submission_json(event, event_json, now))
        slow = Submission.model_validate_json(result.submission(event, now).model_dump_json())
        assert fast == slow
        seen += 1
    assert seen > 100


def test_a_gl_line_s_fields_are_the_ones_named_once() -> None:
    """`GLLine`, the snapshot's dimension fields and the reconciliation's line declare
    what `contracts.submission` names once: a field added to one is added to all."""
    from typing import get_args

    from worker.contracts import Dimension, GLLine
    from worker.contracts.submission import CODE_FIELDS, DIMENSION_FIELDS, OPTIONAL_FIELDS
    from worker.core.ledger_verdict import Line

    declared = list(GLLine.model_fields)
    assert declared[-len(OPTIONAL_FIELDS) :] == list(OPTIONAL_FIELDS)
    assert not {n for n, f in GLLine.model_fields.items() if not f.is_required()} - set(
        OPTIONAL_FIELDS
    )
    assert set(CODE_FIELDS) <= set(declared) and set(DIMENSION_FIELDS) <= set(CODE_FIELDS)
    assert get_args(Dimension.model_fields["xledger_field"].annotation) == DIMENSION_FIELDS
    assert set(OPTIONAL_FIELDS) <= set(Line.__dataclass_fields__)
