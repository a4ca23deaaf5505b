"""Times as finance staff type them: a date is an Oslo day, a month an Oslo month (summer
time included), `previous` the month before this one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.ops.when import OSLO, parse_month, parse_when, period_of

NOW = datetime(2026, 12, 2, 1, 30, tzinfo=UTC)  # 02:30 in Oslo: the CronJob's hour


def test_a_date_is_the_oslo_day_not_midnight_utc() -> None:
    assert parse_when("2026-11-20") == datetime(2026, 11, 19, 23, 0, tzinfo=UTC)
    assert parse_when("2026-07-01") == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)  # summer time
    # --until a date takes the whole day.
    assert parse_when("2026-11-20", end=True) == datetime(2026, 11, 20, 23, 0, tzinfo=UTC)
    assert parse_when("2026-11-20T10:15:00") == datetime(2026, 11, 20, 10, 15, tzinfo=OSLO)
    assert parse_when("2026-11-20T10:15:00+00:00") == datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
    assert parse_when("2h", NOW) == datetime(2026, 12, 1, 23, 30, tzinfo=UTC)


def test_a_month_is_the_oslo_month_and_previous_is_the_one_before() -> None:
    p = parse_month("2026-11")
    assert p.start == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    assert p.end == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    assert parse_month("previous", NOW) == p
    december = parse_month("2026-12")
    assert december.end == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert parse_month("previous", datetime(2026, 1, 2, tzinfo=UTC)).start == datetime(
        2025, 11, 30, 23, 0, tzinfo=UTC
    )
    assert p.contains(datetime(2026, 11, 30, 22, 59, tzinfo=UTC))
    assert not p.contains(datetime(2026, 11, 30, 23, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("since", "until", "month", "error"),
    [
        ("1d", None, "2026-11", "not both"),
        (None, None, "2026-13", "not a month"),
        ("2026-11-20", "2026-11-19", None, "not after"),
        ("yesterday", None, None, "30m, 2h, 7d"),
        ("2026-02-30", None, None, "not a date"),
    ],
)
def test_bad_periods_say_what_is_accepted(
    since: str | None, until: str | None, month: str | None, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        period_of(since, until, month, NOW)
