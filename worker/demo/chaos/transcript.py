"""The campaign's progress lines: on standard error for the person watching (standard
output carries the JSON summary), and in `campaign.log` beside the workers' logs, where a
failure's evidence is read later."""

from __future__ import annotations

import sys
import time
from pathlib import Path

_KEPT_IN: list[Path] = []  # the campaign's log while a campaign runs (keep_in … stop)


def keep_in(path: Path) -> None:
    _KEPT_IN[:] = [path]


def stop() -> None:
    _KEPT_IN.clear()


def say(message: str) -> None:
    """A progress line for the person watching, kept in the log too."""
    print(f"chaos: {message}", file=sys.stderr, flush=True)
    note(message)


def note(message: str) -> None:
    """A line for the campaign's log only: evidence, too detailed to watch."""
    for path in _KEPT_IN:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%X')} {message}\n")
