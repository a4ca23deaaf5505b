"""Waiting in tests, the one way: `until` a plain check holds, or `until_async` an async
check (a scrape, a read of a topic) returns something true. Both fail after their timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


async def until(
    check: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.01
) -> None:
    """Until `check()` is true, asked every `interval_s`; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(interval_s)


async def until_async(
    check: Callable[[], Awaitable[T]], timeout_s: float, what: str, interval_s: float = 0.25
) -> T:
    """Until the awaited `check()` returns something true, which is returned; a check that
    fails on the network (a server not listening yet) counts as not yet. AssertionError
    naming `what` and the last answer after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except (httpx.HTTPError, OSError):
            pass
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
