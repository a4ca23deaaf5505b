"""How this worker talks to Xledger over HTTP: one httpx client, where a request may go
(R2), each token's pacing slot, a hard deadline per request, what an answer's status
means (`errors.py` names what the caller must do next), and the retry loop.

The client (`client.py`: lookups and posting) and the setup reader (`entity_setup.py`:
`preflight`) both send through it. What a failure means to each is its own `Retries`: the
worker waits an outage out (`Patient`), a command gives up after a few attempts. Whatever
of Xledger's or httpx's words reaches a person goes through `worker.logs.mask`, the one
masking: every token is registered with it when the secret store reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx
import pydantic_core

from worker import logs, metrics
from worker.core.endpoints import UrlPolicy, url_allowed
from worker.xledger.errors import (
    AuthFailed,
    CreditsExhausted,
    RateLimited,
    Refused,
    TransientError,
    UnknownOutcome,
    XledgerError,
)
from worker.xledger.pacing import Clock, Pacer, PacingSettings, Sleep, TokenGate
from worker.xledger.secrets import Token
from worker.xledger.types import ClientSettings, Target
from worker.xledger.wire import read_answer

log = logs.get("worker.xledger")

# Operations, as the metrics name them. A mutation's failure may have stored it; a read's
# changed nothing.
LOOKUP = "lookup"
POST = "post"
SETUP = "setup"

T = TypeVar("T")

# At most this many calls (a tenant's lookup and mutations, `client.py`) talk to Xledger at
# once, each one request at a time on a connection of its own. A call never queues for a
# connection between its lookup and its mutation (at 356 tenants at once the pool's queue
# made every lookup stale before its mutation left: seven lookups a mutation), and
# httpcore's pool never holds a queue (a request cancelled while queued there can leave
# its slot taken for good: encode/httpcore#1093, seen as PoolTimeout for every request).
# The posting loop takes its slot before it reads a batch: at most this many batches are
# held read (a read submission takes ~4.9 KB, its bytes ~1.5 KB). 16 keep Xledger's answers
# (50 ms and more) overlapping, and httpcore's per-request walk over its pool short.
CONCURRENT_CALLS = 16

# The slot the running task holds, if any: a call within a call (the posting loop holds
# one from reading a batch to writing its results) takes no second one.
_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("xledger_call", default=False)


class SessionSettings(PacingSettings, Protocol):
    """What the session reads of the client's settings (`ClientSettings` has all of it)."""

    @property
    def timeout_s(self) -> float: ...  # httpx's, per phase (connect, write, pool)
    @property
    def request_deadline_s(self) -> float: ...  # the whole request, hard


class XledgerHttp:
    """The HTTP client, the URL policy and the pacing every tenant's session shares."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        policy: UrlPolicy | None = None,
        endpoint_override: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.policy = policy or UrlPolicy()
        if endpoint_override is not None and not url_allowed(
            endpoint_override, test_tenant=False, policy=self.policy
        ):
            # Only a loopback sandbox, and only in sandbox mode, may stand in for Xledger.
            raise ValueError("endpoint override is allowed only for a sandbox URL in sandbox mode")
        self.endpoint_override = endpoint_override
        self.s = settings
        self._http = httpx.AsyncClient(
            transport=transport,
            # Connecting and sending are quick or failing; an answer may take Xledger up to
            # the request deadline (which bounds the whole request anyway): waiting less
            # would make a slow but sure answer an unknown outcome.
            timeout=httpx.Timeout(settings.timeout_s, read=settings.request_deadline_s),
            limits=httpx.Limits(
                max_connections=CONCURRENT_CALLS, max_keepalive_connections=CONCURRENT_CALLS
            ),
            follow_redirects=False,  # a redirect must never carry the token elsewhere
        )
        self._pacer = Pacer(settings, clock=clock, sleep=sleep)
        self._calls = asyncio.Semaphore(CONCURRENT_CALLS)

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """Held for the whole of a call (`async with http.call():`), once per task: see
        CONCURRENT_CALLS."""
        if _HOLDING.get():
            yield
            return
        async with self._calls:
            token = _HOLDING.set(True)
            try:
                yield
            finally:
                _HOLDING.reset(token)

    async def aclose(self) -> None:
        await self._http.aclose()

    def url_refused(self, target: Target) -> str | None:
        """Why `target`'s URL may not be sent a token (R2), or None when it may."""
        if url_allowed(target.url, test_tenant=target.test_tenant, policy=self.policy):
            return None
        return f"URL {target.url} is not an allowed Xledger URL (R2)"

    def url_for(self, target: Target) -> str:
        """Where the requests for `target` go: its URL, or the sandbox standing in for it."""
        return self.endpoint_override or target.url

    def gate(self, token: Token) -> TokenGate:
        return self._pacer.gate(token)

    def session(self, target: Target, token: Token) -> Session:
        return Session(
            self._http,
            target.tenant_id,
            self.url_for(target),
            token,
            self.gate(token),
            self.s.request_deadline_s,
        )


@dataclass
class Session:
    """One tenant's requests: its URL, its token and the token's pacing gate."""

    http: httpx.AsyncClient
    tenant_id: str
    url: str
    token: Token
    gate: TokenGate
    deadline_s: float
    requests: int = 0  # sent, not counting those `before_send` stopped

    async def request(
        self,
        operation: str,
        query: str,
        variables: dict[str, Any],
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """One request in the token's pacing slot: the answer's `data`, or the XledgerError
        it means. `before_send` runs in the slot, right before sending: raising `NotSent`
        there gives the slot back."""
        async with self.gate.slot(self.tenant_id):
            if before_send is not None:
                await before_send()
            self.requests += 1
            started = time.perf_counter()
            label = "ok"
            try:
                async with asyncio.timeout(self.deadline_s):
                    return await self._send(query, variables)
            except TimeoutError:
                label = "deadline"
                message = f"no answer within the request deadline ({self.deadline_s:g} s)"
                # A mutation may have been stored; a read changed nothing.
                if operation == POST:
                    raise UnknownOutcome(message) from None
                raise TransientError(message) from None
            except XledgerError as exc:
                label = exc.code
                raise
            finally:
                metrics.XLEDGER_REQUESTS.labels(self.tenant_id, operation, label).inc()
                metrics.XLEDGER_REQUEST_SECONDS.labels(operation).observe(
                    time.perf_counter() - started
                )

    async def _send(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "Authorization": f"token {self.token.reveal()}",
            "Content-Type": "application/json",
        }
        try:
            # pydantic-core's encoder: the standard library's was a tenth of the worker's
            # CPU in a burst (a mutation carries 500 nodes).
            payload = pydantic_core.to_json({"query": query, "variables": variables})
            response = await self.http.post(self.url, content=payload, headers=headers)
            # httpx 0.28 binds a response's stream back to the response (encode/httpx#3733):
            # a reference cycle holding the request's body (a mutation: ~85 KB) and the
            # answer until a full collection, which this worker's thresholds make rare
            # (runtime.py): 30 MB of bodies at the month start. The answer is read by now;
            # holding it as plain bytes ends the cycle, and refcounting frees it all.
            response.stream = httpx.ByteStream(response.content)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientError(f"could not connect: {type(exc).__name__}") from None
        except httpx.TransportError as exc:  # sent, or maybe sent: the outcome is unknown
            raise UnknownOutcome(f"no answer: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise UnknownOutcome(f"HTTP {response.status_code}")
        if response.status_code == 429:
            raise RateLimited("HTTP_429", 5.0, "HTTP 429")
        if response.status_code in (401, 403):
            raise AuthFailed(f"HTTP {response.status_code}: Xledger refused the API token")
        try:
            body = pydantic_core.from_json(response.content)
        except ValueError:
            raise UnknownOutcome(f"HTTP {response.status_code}: answer is not JSON") from None
        return read_answer(response.status_code, body, datetime.now(UTC))


class Retries(Protocol):
    """What a caller does when a request fails: wait (and return), or give up (raise)."""

    async def rate_limited(self, exc: RateLimited) -> None: ...
    async def out_of_credits(self, exc: CreditsExhausted) -> None: ...
    async def failed(self, operation: str, exc: XledgerError) -> None: ...


async def retrying(
    operation: str,
    send: Callable[[], Awaitable[T]],
    retries: Retries,
    *,
    retry_refused: bool = False,
    unknown_is_final: bool = False,
) -> T:
    """Send until an answer: Xledger's limits and failures go to `retries`, which waits or
    gives up. A refusal is raised unless `retry_refused` (a read's, which changed nothing);
    with `unknown_is_final` an UnknownOutcome is raised at once (the caller must let it
    settle and look before resending) instead of being retried blindly."""
    while True:
        try:
            return await send()
        except RateLimited as exc:
            await retries.rate_limited(exc)
        except CreditsExhausted as exc:
            await retries.out_of_credits(exc)
        except (TransientError, UnknownOutcome, Refused) as exc:
            if isinstance(exc, Refused) and not retry_refused:
                raise
            if unknown_is_final and isinstance(exc, UnknownOutcome):
                raise
            await retries.failed(operation, exc)


@dataclass
class Patient:
    """The worker's retries, for one call of the client: Xledger's limits waited out (no
    attempt spent), a pause while the credits are used up, failures backed off with jitter,
    and given up (`GiveUp`) only when the attempts are spent and Xledger has been failing
    for longer than the outage patience: an outage of minutes is waited out."""

    tenant: str
    gate: TokenGate
    s: ClientSettings
    sleep: Sleep
    clock: Clock
    backoff: Callable[[int], float]
    attempts: int = 0
    failing_since: float | None = None

    async def rate_limited(self, exc: RateLimited) -> None:
        metrics.XLEDGER_RATE_LIMIT_WAIT_SECONDS.labels(self.tenant, exc.code).inc(exc.wait_s)
        log.warning(
            "xledger_rate_limited",
            tenant_id=self.tenant,
            code=exc.code,
            wait_s=round(exc.wait_s, 2),
        )
        await self.sleep(exc.wait_s)  # limits are not failures: no attempt spent

    async def out_of_credits(self, exc: CreditsExhausted) -> None:
        pause = self.gate.pause_for_credits(self.tenant, exc.reset_in_s)
        log.error(
            "xledger_credits_exhausted",
            tenant_id=self.tenant,
            pause_s=round(pause),
            action="posting for this tenant is paused; other tenants go on",
        )

    async def failed(self, operation: str, exc: XledgerError) -> None:
        """Count an attempt, give up when they are spent (and patience too), else wait."""
        self.attempts += 1
        metrics.XLEDGER_RETRIES.labels(self.tenant, exc.code).inc()
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        patient = now - self.failing_since < self.s.outage_patience_s
        if self.attempts >= self.s.max_attempts and not patient:
            raise GiveUp(exc.code, f"{operation} failed {self.attempts} times: {exc}") from None
        delay = self.backoff(self.attempts)
        log.warning(
            "xledger_retry",
            tenant_id=self.tenant,
            operation=operation,
            code=exc.code,
            attempt=self.attempts,
            delay_s=round(delay, 2),
            error=logs.mask(str(exc)),
        )
        await self.sleep(delay)


class GiveUp(Exception):
    """Retries are spent: the call's payments without an outcome fail, or are held where
    they may be in Xledger."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
