"""Times as operators type them: `2h`, `30m`, `7d`, `2026-11-20` or an ISO timestamp."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A moment: a duration ago (`90m`, `2h`, `7d`), a date (midnight UTC) or an ISO
    timestamp (UTC when it has no offset). Raises ValueError with what is accepted."""
    now = now or datetime.now(UTC)
    t = text.strip()
    m = _AGO.match(t)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        moment = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use a duration ago (30m, 2h, 7d), a date "
            "(2026-11-20) or an ISO timestamp (2026-11-20T10:15:00+01:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
