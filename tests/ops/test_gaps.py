"""When a partition may no longer hold all of a period (reconcile's `incomplete`): only
when records were deleted, none before the period is kept, and the topic's retention
could have reached into the period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kafka import TopicPartition

from worker.ops.topic_reader import gap_of

TP = TopicPartition("xledger.dlq.v1", 2)
DAY_MS = 86_400_000
NOW = datetime.now(UTC)
MONTH_AGO = NOW - timedelta(days=33)


def keeps(days: float | None):  # type: ignore[no-untyped-def]
    return lambda _topic: None if days is None else int(days * DAY_MS)


def test_nothing_deleted_or_an_older_record_kept_is_whole() -> None:
    assert gap_of(TP, 0, 10, (3, 0), MONTH_AGO, keeps(30)) is None
    assert gap_of(TP, 5, 10, (7, 0), MONTH_AGO, keeps(30)) is None  # offset 5, 6 kept: older
    assert gap_of(TP, 5, 10, None, MONTH_AGO, keeps(30)) is None  # all kept are older


def test_deleted_records_that_retention_could_have_taken_from_the_period_are_a_gap() -> None:
    ts = int((MONTH_AGO + timedelta(days=2)).timestamp() * 1000)
    gap = gap_of(TP, 5, 10, (5, ts), MONTH_AGO, keeps(30))
    assert gap is not None and gap.log_start == 5 and "offsets before 5" in gap.describe()
    empty = gap_of(TP, 8, 8, None, MONTH_AGO, keeps(30))  # everything deleted
    assert empty is not None and empty.oldest_kept_at is None
    assert gap_of(TP, 5, 10, (5, ts), MONTH_AGO, keeps(None)) is not None  # retention unknown


def test_a_period_within_the_retention_lost_nothing_to_it() -> None:
    assert gap_of(TP, 8, 8, None, NOW - timedelta(days=20), keeps(30)) is None
    assert gap_of(TP, 5, 10, (5, 0), NOW - timedelta(days=20), keeps(30)) is None
    # Kept for ever (retention.ms -1), yet records were deleted: by hand, of any time.
    assert gap_of(TP, 5, 10, (5, 0), NOW - timedelta(days=1), keeps(-1 / DAY_MS)) is not None
