"""The one dead-letter policy (`worker/pipeline/dead_letters.py`)."""

from __future__ import annotations

from worker.contracts import DlqHeaders, DlqReason
from worker.pipeline.dead_letters import dlq_headers


def test_a_replayed_record_that_fails_again_keeps_its_replay_count_and_nothing_else_old() -> None:
    replayed = [
        ("trace", b"abc"),
        ("dlq.reason", b"invalid"),
        ("dlq.error_message", b"the first failure"),
        ("dlq.replay_count", b"2"),
        ("dlq.replayed_by", b"u-1"),
    ]
    headers = dlq_headers(
        replayed,
        reason=DlqReason.INVALID,
        error_class="ValidationError",
        error_message="the second failure",
        stage="enrich",
        topic="flyt.payment-status.v1",
        partition=1,
        offset=7,
    )
    names = [k for k, _ in headers]
    assert len(names) == len(set(names))  # each header once
    parsed = DlqHeaders.from_kafka(headers)
    assert parsed.replay_count == 2 and parsed.replayed_by == "u-1"  # the replay cap holds
    assert parsed.error_message == "the second failure"
    assert headers[0] == ("trace", b"abc")
