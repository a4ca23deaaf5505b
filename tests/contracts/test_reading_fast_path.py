"""read_event's fast path (pydantic's JSON parser, issue 13) accepts exactly what the
reference path (json.loads, then model_validate) accepts, and builds the same event."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.e2e.bad_records import any_json, encode, paths, put, remove
from worker.contracts import PaymentStatusEvent
from worker.contracts.reading import Unreadable, read_event
from worker.demo.events import generate_events

TEMPLATES = list(generate_events(40, seed=13))


def reference(data: bytes) -> PaymentStatusEvent | None:
    """The reader without the fast path (UTF-8 only, as read_event); None for unreadable."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return PaymentStatusEvent.model_validate(raw)
    except ValidationError:
        return None


@st.composite
def mutated(draw: Any) -> bytes:
    event = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(paths(event)))
        if draw(st.booleans()):
            put(event, path, draw(any_json()))
        else:
            remove(event, path)
    return encode(event)


RAW_VARIANTS = [
    b'{"a": NaN}',
    b"\xff\xfe",
    json.dumps(TEMPLATES[0]).replace('"Betalt"', '"Betalt", "status": "Ny"').encode(),
    json.dumps(TEMPLATES[0]).replace('"amount": "', '"amount": "\\ud800').encode(),
    json.dumps(TEMPLATES[0], ensure_ascii=False).encode("utf-16"),
]


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_the_fast_path_agrees_with_the_reference_reader(data: bytes) -> None:
    got = read_event(data)
    want = reference(data)
    if want is None:
        assert isinstance(got, Unreadable)
    else:
        assert got == want


def test_odd_bytes_are_read_as_before() -> None:
    for data in RAW_VARIANTS:
        got, want = read_event(data), reference(data)
        assert (isinstance(got, Unreadable) and want is None) or got == want, data
