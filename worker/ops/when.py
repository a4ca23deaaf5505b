"""Times as operators and finance staff type them: `2h`, `30m`, `7d` ago, a date, an ISO
timestamp, a month. A date, a month and a timestamp without an offset are Oslo time
(Europe/Oslo, summer time included): the day finance staff mean, not midnight UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

OSLO = ZoneInfo("Europe/Oslo")

_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
PREVIOUS_MONTH = ("previous", "last")  # `--month previous`: the CronJob's month

ACCEPTED = (
    "use a duration ago (30m, 2h, 7d), a date (2026-11-20, an Oslo day) or an ISO "
    "timestamp (2026-11-20T10:15:00+01:00; Oslo time without an offset)"
)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=OSLO)


def parse_when(text: str, now: datetime | None = None, *, end: bool = False) -> datetime:
    """A moment: a duration ago, a date, or an ISO timestamp. A date is the start of that
    Oslo day, or with `end` the start of the next (so `--until 2026-11-20` takes the
    whole day). Raises ValueError with what is accepted."""
    now = now or datetime.now(UTC)
    t = text.strip()
    m = _AGO.match(t)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    if _DATE.match(t):
        try:
            day = date.fromisoformat(t)
        except ValueError:
            raise ValueError(f"{text!r} is not a date: {ACCEPTED}") from None
        return _day_start(day + timedelta(days=1) if end else day)
    try:
        moment = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: {ACCEPTED}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=OSLO)


@dataclass(frozen=True)
class Period:
    """[start, end): broker times from `start` (None: the first record) to before `end`
    (None: now, or what is on the topic when the read starts)."""

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment < self.end
        )

    def contains_ms(self, timestamp_ms: int) -> bool:
        return self.contains(datetime.fromtimestamp(timestamp_ms / 1000, UTC))

    def describe(self) -> str:
        a = self.start.astimezone(OSLO).isoformat() if self.start else "the first record"
        b = self.end.astimezone(OSLO).isoformat() if self.end else "now"
        return f"{a} to {b}"


def parse_month(text: str, now: datetime | None = None) -> Period:
    """`2026-11`: the Oslo month, from its first day's midnight to the next month's;
    `previous` (or `last`): the month before the current Oslo month."""
    t = text.strip().lower()
    if t in PREVIOUS_MONTH:
        today = (now or datetime.now(UTC)).astimezone(OSLO).date()
        year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    else:
        m = _MONTH.match(t)
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ValueError(f"{text!r} is not a month: use YYYY-MM (2026-11) or 'previous'")
        year, month = int(m.group(1)), int(m.group(2))
    first = date(year, month, 1)
    after = date(year + (month == 12), month % 12 + 1, 1)
    return Period(_day_start(first), _day_start(after))


def period_of(
    since: str | None, until: str | None, month: str | None, now: datetime | None = None
) -> Period:
    """The period of --since/--until or --month (not both: ValueError)."""
    if month is not None:
        if since is not None or until is not None:
            raise ValueError("give --month, or --since/--until, not both")
        return parse_month(month, now)
    start = parse_when(since, now) if since is not None else None
    end = None
    if until is not None:
        end = parse_when(until, now, end=True)
        if not _DATE.match(until.strip()):
            end += timedelta(milliseconds=1)  # "at or before" a moment: its millisecond too
    if start is not None and end is not None and end <= start:
        raise ValueError("--until is not after --since: the period is empty")
    return Period(start, end)


def age(moment: datetime, now: datetime | None = None) -> str:
    """`42s`, `17m`, `3h05m`, `2d04h`: short enough for a table column."""
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
