"""Posts Submissions to Xledger with `addGLImportItems`: batched, rate-aware, never twice.

Per tenant batch:
1. ask Xledger which of the batch's external identifiers it already holds
   (`glImportItems`, filter `extIdentifier_in`), and post only the rest;
2. post them in mass mutations of at most 500 nodes (250 payments), one voucher
   (`trRegNumber`) per payment, results matched back by `clientId`;
3. on a failure whose outcome is unknown (timeout, reset after sending, 5xx) look again
   before resending; on Xledger's limits wait as told; on a refusal of the content,
   split the batch to find the refused payments and post the rest.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from worker import logs, metrics
from worker.contracts import Receipt, ReceiptLine, Submission
from worker.contracts.submission import GLLine
from worker.core.endpoints import UrlPolicy, url_allowed
from worker.xledger.errors import (
    AuthFailed,
    CreditsExhausted,
    RateLimited,
    Refused,
    TransientError,
    UnknownOutcome,
    XledgerError,
    classify_errors,
)
from worker.xledger.secrets import MissingToken, SecretStore, Token

log = logs.get("worker.xledger")

MAX_NODES = 500  # per mass mutation (Xledger help centre 8715787519634)
LINES_PER_PAYMENT = 2  # R18
MAX_PAYMENTS_PER_REQUEST = MAX_NODES // LINES_PER_PAYMENT
MAX_RECORDS_PER_QUERY = 10_000

ADD_GL_IMPORT_ITEMS = """
mutation AddGLImportItems($inputs: [AddGLImportItemsInput!]!) {
  addGLImportItems(inputs: $inputs) {
    edges { clientId node { dbId extIdentifier } }
  }
}
""".strip()

GL_IMPORT_ITEMS_BY_EXT_ID = """
query GLImportItemsByExtIdentifier($ids: [String!]!, $first: Int!, $after: String) {
  glImportItems(first: $first, after: $after, filter: { extIdentifier_in: $ids }) {
    edges { cursor node { dbId extIdentifier } }
    pageInfo { hasNextPage }
  }
}
""".strip()

_REF_FIELDS = (
    "account",
    "taxRule",
    "glObject1",
    "glObject2",
    "glObject3",
    "glObject4",
    "glObject5",
    "project",
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom a tenant's payments are posted (from its register snapshot)."""

    tenant_id: str
    url: str
    token_ref: str
    test_tenant: bool = False


@dataclass
class PostResult:
    receipts: list[Receipt] = field(default_factory=list)
    refused: list[tuple[Submission, str]] = field(default_factory=list)  # Xledger's message
    failed: list[tuple[Submission, str, str]] = field(default_factory=list)  # (code, message)
    requests: int = 0


@dataclass
class ClientSettings:
    timeout_s: float = 10.0
    max_attempts: int = 8  # per batch, for retryable failures
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    burst_limit: int = 20  # Xledger: 20 requests per 5 s per token
    burst_window_s: float = 5.0
    burst_headroom: int = 2  # stay below the limit so steady state never meets it
    concurrency: int = 2  # requests in flight per token
    credits_pause_s: float = 20 * 60.0  # Xledger's own sample waits 20 min
    transaction_source: str = "GL"


class _TokenGate:
    """Per-token pacing: a sliding window under the burst limit, a concurrency cap, pauses."""

    def __init__(self, s: ClientSettings) -> None:
        self.sent: deque[float] = deque()
        self.semaphore = asyncio.Semaphore(s.concurrency)
        self.paused_until = 0.0


class XledgerClient:
    def __init__(
        self,
        secrets: SecretStore,
        *,
        policy: UrlPolicy | None = None,
        endpoint_override: str | None = None,
        settings: ClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or UrlPolicy()
        if endpoint_override is not None and not url_allowed(
            endpoint_override, test_tenant=False, policy=self.policy
        ):
            # Only a loopback sandbox, and only in sandbox mode, may stand in for Xledger.
            raise ValueError("endpoint override is allowed only for a sandbox URL in sandbox mode")
        self.endpoint_override = endpoint_override
        self.secrets = secrets
        self.s = settings or ClientSettings()
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self.s.timeout_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,  # a redirect must never carry the token elsewhere
        )
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._gates: dict[str, _TokenGate] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> XledgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- public -----------------------------------------------------------------------

    async def post(self, target: Target, submissions: Sequence[Submission]) -> PostResult:
        """Post one tenant's submissions; every one ends in receipts, refused or failed."""
        result = PostResult()
        posted: dict[str, Submission] = {}
        for sub in submissions:
            posted.setdefault(sub.payment_id, sub)
        unique = list(posted.values())
        if not unique:
            return result
        foreign = [s for s in unique if s.tenant_id != target.tenant_id]
        if foreign:  # never post one tenant's payment with another's token
            raise ValueError(f"{len(foreign)} submission(s) are not of tenant {target.tenant_id}")
        url = self.endpoint_override or target.url
        if not url_allowed(target.url, test_tenant=target.test_tenant, policy=self.policy):
            return self._fail_all(
                result,
                unique,
                "url_not_allowed",
                f"URL {target.url} is not an allowed Xledger URL (R2)",
            )
        try:
            token = self.secrets.token(target.token_ref)
        except MissingToken as exc:
            return self._fail_all(result, unique, "missing_token", str(exc))
        logs.register_secret(token.reveal())
        await _Call(self, target, url, token, result).post_all(unique)
        # Duplicates of a payment within the call share its outcome.
        if len(unique) != len(submissions):
            _share_outcomes(result, submissions, posted)
        return result

    def ready_in(self, token_ref: str, requests: int = 2) -> float:
        """Seconds until this token may send `requests` requests without being held back.

        The post stage gathers a tenant's payments for at least this long: a batch that
        would wait for the limit anyway may as well carry more payments.
        """
        try:
            gate = self._gate(self.secrets.token(token_ref))
        except MissingToken:
            return 0.0
        now = self._clock()
        wait = max(0.0, gate.paused_until - now)
        limit = max(1, self.s.burst_limit - self.s.burst_headroom)
        recent = [t for t in gate.sent if now - t < self.s.burst_window_s]
        excess = len(recent) + requests - limit
        if excess > 0:
            wait = max(wait, recent[excess - 1] + self.s.burst_window_s - now)
        return wait

    # --- internals used by _Call ---------------------------------------------------------

    def _gate(self, token: Token) -> _TokenGate:
        key = hashlib.sha256(token.reveal().encode()).hexdigest()  # limits are per token
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _TokenGate(self.s)
        return gate

    def _fail_all(
        self, result: PostResult, subs: Sequence[Submission], code: str, message: str
    ) -> PostResult:
        for sub in subs:
            result.failed.append((sub, code, message))
        if subs:
            metrics.XLEDGER_PAYMENTS.labels(subs[0].tenant_id, "failed").inc(len(subs))
            log.error(
                "xledger_batch_failed",
                tenant_id=subs[0].tenant_id,
                code=code,
                error=message,
                payments=len(subs),
            )
        return result

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped."""
        ceiling = min(self.s.backoff_cap_s, self.s.backoff_base_s * (2 ** (attempt - 1)))
        return self._rng.uniform(ceiling / 2, ceiling)


def _share_outcomes(
    result: PostResult, submissions: Sequence[Submission], posted: dict[str, Submission]
) -> None:
    """A payment submitted twice in one call was posted once; both copies get its outcome."""
    receipts = {r.payment_id: r for r in result.receipts}
    refused = {s.payment_id: m for s, m in result.refused}
    failed = {s.payment_id: (c, m) for s, c, m in result.failed}
    for sub in submissions:
        pid = sub.payment_id
        if posted[pid] is sub:
            continue
        if pid in receipts:
            result.receipts.append(receipts[pid].model_copy(update={"event_id": sub.event_id}))
        elif pid in refused:
            result.refused.append((sub, refused[pid]))
        elif pid in failed:
            result.failed.append((sub, *failed[pid]))


class _Call:
    """One `post()` call: a tenant, its token and the running result."""

    def __init__(
        self, client: XledgerClient, target: Target, url: str, token: Token, result: PostResult
    ) -> None:
        self.c = client
        self.target = target
        self.tenant = target.tenant_id
        self.url = url
        self.token = token
        self.gate = client._gate(token)
        self.result = result
        self.attempts = 0
        self.all: list[Submission] = []

    async def post_all(self, subs: list[Submission]) -> None:
        """One lookup for the call, then mutations of at most 250 payments each."""
        self.all = subs
        try:
            absent = await self._drop_present(subs)
            for start in range(0, len(absent), MAX_PAYMENTS_PER_REQUEST):
                await self._post_absent(absent[start : start + MAX_PAYMENTS_PER_REQUEST])
        except _GiveUp as exc:
            self._give_up(exc.code, exc.message)
        except AuthFailed as exc:
            self._give_up(exc.code, str(exc))

    def _give_up(self, code: str, message: str) -> None:
        # Everything of the call without an outcome yet: the rest of the chunks too.
        done = {r.payment_id for r in self.result.receipts} | {
            s.payment_id for s, _ in self.result.refused
        }
        left = [s for s in self.all if s.payment_id not in done]
        self.c._fail_all(self.result, left, code, message)

    async def _drop_present(self, subs: list[Submission]) -> list[Submission]:
        """Receipts for the payments Xledger already holds; returns the ones it does not."""
        ids = [line.extIdentifier for s in subs for line in s.lines]
        found = await self._retrying("lookup", lambda: self._lookup(ids))
        absent = []
        for sub in subs:
            db_ids = [found.get(line.extIdentifier) for line in sub.lines]
            if all(d is not None for d in db_ids):
                self._receipt(
                    sub, [int(d) for d in db_ids if d is not None], "lookup", already_present=True
                )
            elif any(d is not None for d in db_ids):
                # Half a voucher in Xledger: posting the rest could unbalance it, and
                # re-posting all would double a line. A person must look.
                log.error(
                    "xledger_partial_voucher", tenant_id=self.tenant, payment_id=sub.payment_id
                )
                self._refuse(
                    sub, "Bare én av to linjer finnes i Xledger; bilaget må kontrolleres manuelt."
                )
            else:
                absent.append(sub)
        return absent

    async def _post_absent(self, subs: list[Submission]) -> None:
        """Post payments known to be absent; bisect on refusal; look again on doubt."""
        while subs:
            try:
                batch_id, db_ids = await self._retrying(
                    "post", functools.partial(self._mutate, subs), unknown_is_final=True
                )
            except Refused as exc:
                blamed = _blame(exc.messages, subs)
                if blamed and len(blamed) < len(subs):
                    # Xledger named the refused codes: refuse exactly the payments that
                    # carry them (nothing was stored) and post the rest as one batch.
                    for sub in subs:
                        if sub.payment_id in blamed:
                            self._refuse(sub, blamed[sub.payment_id])
                    subs = [sub for sub in subs if sub.payment_id not in blamed]
                    continue
                if len(subs) == 1 or len(blamed) == len(subs):
                    for sub in subs:
                        self._refuse(sub, blamed.get(sub.payment_id) or str(exc))
                    return
                # Not attributable: split the batch to find the refused payment(s).
                mid = len(subs) // 2
                await self._post_absent(subs[:mid])
                await self._post_absent(subs[mid:])
                return
            except UnknownOutcome:
                # The batch may be in Xledger: look before sending anything again.
                subs = await self._drop_present(subs)
                continue
            for sub in subs:
                self._receipt(sub, [db_ids[(sub.payment_id, n)] for n in (1, 2)], batch_id)
            metrics.XLEDGER_PAYMENTS.labels(self.tenant, "posted").inc(len(subs))
            return

    async def _retrying(
        self,
        operation: str,
        send: Callable[[], Awaitable[Any]],
        unknown_is_final: bool = False,
    ) -> Any:
        """Send until an answer; wait on limits; back off on transient failures.

        With `unknown_is_final` an UnknownOutcome is raised to the caller (who must look
        before resending) instead of being retried blindly.
        """
        while True:
            try:
                return await send()
            except RateLimited as exc:
                metrics.XLEDGER_RATE_LIMIT_WAIT_SECONDS.labels(self.tenant, exc.code).inc(
                    exc.wait_s
                )
                log.warning(
                    "xledger_rate_limited",
                    tenant_id=self.tenant,
                    code=exc.code,
                    wait_s=round(exc.wait_s, 2),
                )
                await self.c._sleep(exc.wait_s)  # limits are not failures: no attempt spent
            except CreditsExhausted as exc:
                await self._pause_for_credits(exc)
            except (TransientError, UnknownOutcome) as exc:
                self.attempts += 1
                metrics.XLEDGER_RETRIES.labels(self.tenant, exc.code).inc()
                if self.attempts >= self.c.s.max_attempts:
                    raise _GiveUp(
                        exc.code, f"{operation} failed {self.attempts} times: {exc}"
                    ) from None
                delay = self.c.backoff(self.attempts)
                log.warning(
                    "xledger_retry",
                    tenant_id=self.tenant,
                    operation=operation,
                    code=exc.code,
                    attempt=self.attempts,
                    delay_s=round(delay, 2),
                    error=str(exc),
                )
                await self.c._sleep(delay)
                if unknown_is_final and isinstance(exc, UnknownOutcome):
                    raise

    async def _pause_for_credits(self, exc: CreditsExhausted) -> None:
        # The configured pause, or Xledger's reset time when that comes sooner.
        pause = self.c.s.credits_pause_s
        if exc.reset_in_s is not None:
            pause = min(pause, exc.reset_in_s)
        self.gate.paused_until = self.c._clock() + pause
        metrics.XLEDGER_TENANT_PAUSED.labels(self.tenant).set(1)
        log.error(
            "xledger_credits_exhausted",
            tenant_id=self.tenant,
            pause_s=round(pause),
            action="posting for this tenant is paused; other tenants go on",
        )

    # --- the two requests ---------------------------------------------------------------

    async def _lookup(self, ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        after: str | None = None
        while True:
            first = min(MAX_RECORDS_PER_QUERY, 2 * len(ids) + 10)
            data = await self._request(
                "lookup", GL_IMPORT_ITEMS_BY_EXT_ID, {"ids": ids, "first": first, "after": after}
            )
            conn = data.get("glImportItems") or {}
            edges = conn.get("edges") or []  # Xledger answers `edges: null` when none match
            for edge in edges:
                node = edge["node"]
                found.setdefault(node["extIdentifier"], int(node["dbId"]))
            if not (conn.get("pageInfo") or {}).get("hasNextPage") or not edges:
                return found
            after = edges[-1]["cursor"]

    async def _mutate(self, subs: list[Submission]) -> tuple[str, dict[tuple[str, int], int]]:
        inputs = []
        vouchers = _voucher_numbers(subs)
        for i, sub in enumerate(subs):
            for n, line in enumerate(sub.lines, start=1):
                inputs.append(
                    {
                        "clientId": f"{i}:{n}",
                        "node": self._node(line, vouchers[sub.payment_id]),
                    }
                )
        metrics.XLEDGER_BATCH_PAYMENTS.observe(len(subs))
        data = await self._request("post", ADD_GL_IMPORT_ITEMS, {"inputs": inputs})
        edges = (data.get("addGLImportItems") or {}).get("edges") or []
        db_ids: dict[tuple[str, int], int] = {}
        for edge in edges:
            i_str, _, n_str = str(edge.get("clientId", "")).partition(":")
            if i_str.isdigit() and n_str.isdigit() and int(i_str) < len(subs):
                db_ids[(subs[int(i_str)].payment_id, int(n_str))] = int(edge["node"]["dbId"])
        missing = [
            s.payment_id for s in subs if any((s.payment_id, n) not in db_ids for n in (1, 2))
        ]
        if missing:
            # An answer without every line is not a trustworthy answer: look it up.
            raise UnknownOutcome(f"answer lacks {len(missing)} payment(s)")
        return uuid.uuid4().hex, db_ids

    def _node(self, line: GLLine, voucher: int) -> dict[str, Any]:
        node: dict[str, Any] = {
            "trRegNumber": voucher,
            "transactionSource": {"code": self.c.s.transaction_source},
            "postedDate": line.postedDate.isoformat(),
            "amount": f"{line.amount:.2f}",
            "currency": {"code": line.currency},
            "text": line.text,
            "extIdentifier": line.extIdentifier,
        }
        for name in _REF_FIELDS:
            value = getattr(line, name)
            if value is not None:
                node[name] = {"code": value}
        if line.bankAccountRef is not None:  # R4: the Bankkonti-pkey is a dbId
            ref = line.bankAccountRef
            node["bankAccountRef"] = {"dbId": int(ref)} if ref.isdigit() else {"code": ref}
        return node

    async def _request(
        self, operation: str, query: str, variables: dict[str, Any]
    ) -> dict[str, Any]:
        await self._wait_for_gate()
        async with self.gate.semaphore:
            self.gate.sent.append(self.c._clock())
            self.result.requests += 1
            started = time.perf_counter()
            label = "ok"
            try:
                return await self._send(query, variables)
            except XledgerError as exc:
                label = exc.code
                raise
            finally:
                metrics.XLEDGER_REQUESTS.labels(self.tenant, operation, label).inc()
                metrics.XLEDGER_REQUEST_SECONDS.labels(operation).observe(
                    time.perf_counter() - started
                )

    async def _wait_for_gate(self) -> None:
        s = self.c.s
        limit = max(1, s.burst_limit - s.burst_headroom)
        while True:
            now = self.c._clock()
            if self.gate.paused_until > now:
                await self.c._sleep(self.gate.paused_until - now)
                continue
            metrics.XLEDGER_TENANT_PAUSED.labels(self.tenant).set(0)
            sent = self.gate.sent
            while sent and now - sent[0] >= s.burst_window_s:
                sent.popleft()
            if len(sent) < limit:
                return
            wait = s.burst_window_s - (now - sent[0]) + 0.01
            metrics.XLEDGER_RATE_LIMIT_WAIT_SECONDS.labels(self.tenant, "pacing").inc(wait)
            await self.c._sleep(wait)

    async def _send(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"token {self.token.reveal()}"}
        try:
            response = await self.c._http.post(
                self.url, json={"query": query, "variables": variables}, headers=headers
            )
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
            body = response.json()
        except ValueError:
            raise UnknownOutcome(f"HTTP {response.status_code}: answer is not JSON") from None
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            raise classify_errors(errors, datetime.now(UTC))
        if response.status_code != 200 or not isinstance(body.get("data"), dict):
            raise Refused([f"HTTP {response.status_code}: unexpected answer"])
        data: dict[str, Any] = body["data"]
        return data

    def _refuse(self, sub: Submission, message: str) -> None:
        self.result.refused.append((sub, message))
        metrics.XLEDGER_PAYMENTS.labels(self.tenant, "refused").inc()
        log.warning(
            "xledger_refused_payment",
            tenant_id=self.tenant,
            payment_id=sub.payment_id,
            error=message,
        )

    def _receipt(
        self, sub: Submission, db_ids: list[int], batch_id: str, already_present: bool = False
    ) -> None:
        self.result.receipts.append(
            Receipt(
                tenant_id=sub.tenant_id,
                payment_id=sub.payment_id,
                event_id=sub.event_id,
                lines=[
                    ReceiptLine(extIdentifier=line.extIdentifier, dbId=d)
                    for line, d in zip(sub.lines, db_ids, strict=True)
                ],
                posted_at=datetime.now(UTC),
                batch_id=batch_id,
                already_present=already_present,
            )
        )
        if already_present:
            metrics.XLEDGER_PAYMENTS.labels(self.tenant, "already_present").inc()


class _GiveUp(Exception):
    """Retries are spent: every payment of the call without an outcome has failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _voucher_numbers(subs: Sequence[Submission]) -> dict[str, int]:
    """A stable voucher number (`trRegNumber`) per payment, unique within the request.

    Derived from tenant and payment, so a resend carries the same number (decided:
    Xledger types it as an integer; our payment ids are strings).
    """
    out: dict[str, int] = {}
    used: set[int] = set()
    for sub in subs:
        digest = hashlib.sha256(f"{sub.tenant_id}:{sub.payment_id}".encode()).digest()
        number = 100_000_000 + int.from_bytes(digest[:8], "big") % 900_000_000
        while number in used:  # a collision within one request: step deterministically
            number = 100_000_000 + (number - 99_999_999) % 900_000_000
        used.add(number)
        out[sub.payment_id] = number
    return out


_NO_VALUE = re.compile(
    r"^(?P<field>\w+)\.(?P<key>code|dbId): No value matching owner \S+, (?:code|dbId) "
    r"'?(?P<value>[^']*?)'?\.?$"
)


def _blame(messages: list[str], subs: Sequence[Submission]) -> dict[str, str]:
    """Payment id → Xledger's messages, for the payments whose lines hold a refused code.

    Xledger names the field and the code it refused (`account.code: No value matching
    owner 42365431, code '9999'.`); every payment carrying that code would be refused.
    Messages that name no code blame nobody, and the caller bisects instead.
    """
    refused: list[tuple[str, str, str]] = []
    for message in messages:
        m = _NO_VALUE.match(message.strip())
        if m:
            refused.append((m["field"], m["value"], message))
    blamed: dict[str, list[str]] = {}
    for sub in subs:
        for line in sub.lines:
            for field_name, value, message in refused:
                if str(getattr(line, field_name, None)) == value:
                    blamed.setdefault(sub.payment_id, []).append(message)
    return {pid: " ".join(dict.fromkeys(msgs)) for pid, msgs in blamed.items()}
