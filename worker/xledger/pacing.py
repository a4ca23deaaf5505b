"""Per-token pacing: how fast, how many at once, and when not at all.

Xledger counts requests per API token: 20 in any 5 s, a few in flight, and a credit per
request. The client keeps below the burst limit by a headroom, so that steady state never
meets it (a limit error costs a whole window); it caps the requests in flight; and it
holds a token's requests while its credits are exhausted, which pauses that tenant only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from worker import metrics
from worker.xledger.secrets import Token

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class PacingSettings(Protocol):
    """What pacing reads from the client's settings (`ClientSettings` has all of it)."""

    @property
    def burst_limit(self) -> int: ...  # Xledger's: requests per window per token
    @property
    def burst_window_s(self) -> float: ...
    @property
    def burst_headroom(self) -> int: ...  # kept free below the limit
    @property
    def concurrency(self) -> int: ...  # requests in flight per token
    @property
    def credits_pause_s(self) -> float: ...


class NotSent(Exception):
    """Raised inside `TokenGate.slot` when the request is not sent after all (its fence
    said no, or its lookup grew old while it waited): the slot gives its budget back."""


class TokenGate:
    """One token's budget: a sliding window under the burst limit, a cap on requests in
    flight, and a pause while the credits are exhausted."""

    def __init__(self, settings: PacingSettings, *, clock: Clock, sleep: Sleep) -> None:
        self._s = settings
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()  # when each request of the window was sent
        self._in_flight = asyncio.Semaphore(settings.concurrency)
        self._paused_until = 0.0

    @property
    def per_window(self) -> int:
        """Requests the client allows itself per window: Xledger's limit less the headroom."""
        return max(1, self._s.burst_limit - self._s.burst_headroom)

    def ready_in(self, requests: int = 2) -> float:
        """Seconds until `requests` more may be sent without being held back.

        The post stage gathers a tenant's payments for at least this long: a batch that
        would wait for the limit anyway may as well carry more payments.
        """
        now = self._clock()
        wait = max(0.0, self._paused_until - now)
        recent = [t for t in self._sent if now - t < self._s.burst_window_s]
        # More than a window holds never fit at once: room for a full window is the most.
        excess = len(recent) + min(requests, self.per_window) - self.per_window
        if excess > 0:
            wait = max(wait, recent[excess - 1] + self._s.burst_window_s - now)
        return wait

    @contextlib.asynccontextmanager
    async def slot(self, tenant_id: str) -> AsyncIterator[None]:
        """Hold one request until the budget has room for it, then count it as sent.

        The window is checked before the request queues for a place in flight, and the
        request is counted when it gets one, just before it is sent. A body that raises
        `NotSent` sent nothing: the request is not counted after all.
        """
        await self._wait_for_room(tenant_id)
        async with self._in_flight:
            stamp = self._clock()
            self._sent.append(stamp)
            try:
                yield
            except NotSent:
                with contextlib.suppress(ValueError):
                    self._sent.remove(stamp)
                raise

    def pause_for_credits(self, tenant_id: str, reset_in_s: float | None) -> float:
        """Hold this token's requests after INSUFFICIENT_CREDITS; returns the pause.

        The configured pause, or Xledger's reset time when that comes sooner.
        """
        pause = self._s.credits_pause_s
        if reset_in_s is not None:
            pause = min(pause, reset_in_s)
        self._paused_until = self._clock() + pause
        metrics.XLEDGER_TENANT_PAUSED.labels(tenant_id, metrics.PAUSED_CREDITS).set(1)
        return pause

    async def _wait_for_room(self, tenant_id: str) -> None:
        s = self._s
        while True:
            now = self._clock()
            if self._paused_until > now:
                await self._sleep(self._paused_until - now)
                continue
            metrics.XLEDGER_TENANT_PAUSED.labels(tenant_id, metrics.PAUSED_CREDITS).set(0)
            sent = self._sent
            while sent and now - sent[0] >= s.burst_window_s:
                sent.popleft()
            if len(sent) < self.per_window:
                return
            # Until the oldest request leaves the window, and a little more (clock grain).
            wait = s.burst_window_s - (now - sent[0]) + 0.01
            metrics.XLEDGER_RATE_LIMIT_WAIT_SECONDS.labels(tenant_id, "pacing").inc(wait)
            await self._sleep(wait)


class Pacer:
    """The gates of every token in use. Limits are Xledger's per token, so two tenants that
    share a token share a gate; the gates are keyed by a hash, never by the token itself."""

    def __init__(self, settings: PacingSettings, *, clock: Clock, sleep: Sleep) -> None:
        self._s = settings
        self._clock = clock
        self._sleep = sleep
        self._gates: dict[str, TokenGate] = {}

    def gate(self, token: Token) -> TokenGate:
        key = token.digest()
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = TokenGate(self._s, clock=self._clock, sleep=self._sleep)
        return gate
