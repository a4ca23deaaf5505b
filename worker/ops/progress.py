"""A line on standard error now and then, once a command has taken a while: at production
size a read may take minutes, and the person waiting should see that it moves."""

from __future__ import annotations

import sys
import time


class Progress:
    """Says `message` on standard error, prefixed with the command, at most every
    `every_s`, and only once the command has run `quiet_for_s` (a quick one says nothing)."""

    def __init__(self, command: str, quiet_for_s: float = 2.0, every_s: float = 5.0) -> None:
        self.command = command
        self._start = time.monotonic()
        self._last = 0.0
        self._quiet_for_s = quiet_for_s
        self._every_s = every_s

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._start

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self._start < self._quiet_for_s or now - self._last < self._every_s:
            return
        self._last = now
        self.say(message)

    def say(self, message: str) -> None:
        """Now, whatever the time."""
        print(f"{self.command}: {message}", file=sys.stderr, flush=True)
