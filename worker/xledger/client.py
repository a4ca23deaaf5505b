"""Posts Submissions to Xledger with `addGLImportItems`: batched, rate-aware, never twice.

Per tenant batch (R14 and R18, decided 12-06: Xledger is the only truth for what is posted):
1. ask Xledger which of the batch's external identifiers it already holds, in the import
   staging area and in the journal (`glImportItems` and `journalEntries`, one request),
   always, whatever the caller knows: receipts for what it holds, and only the rest is
   posted; a voucher found more than once is reported as a double;
2. post them in mass mutations of at most 500 nodes (250 payments), one voucher
   (`trRegNumber`) per payment, results matched back by `clientId`;
3. just before a mutation leaves (after the pacing wait and a place in flight) ask the
   caller's fence whether it still owns the payments, and look them up again if more than
   a second has passed since the lookup said Xledger lacks them;
4. on a failure whose outcome is unknown (the hard request deadline, a connection cut
   after sending, a 5xx) send nothing more for those payments: they are held until the
   settle time has passed (Xledger may still be storing the request), and the call that
   posts them again looks them up first; on Xledger's limits wait as told; on a refusal
   of the content, look again first (a mass mutation may be stored in part; a single
   payment's may hold one line), then refuse exactly the payments Xledger named, or split
   the batch to find them, and post the rest.

Every payment ends in exactly one list of the `PostResult`. What was posted always has its
receipt, whatever fails later in the call; a payment is handed back as failed (a dead
letter) only when a lookup of this call said Xledger lacks it and nothing of it was sent
since with an unknown outcome; anything else is held. `post()` raises for no answer of
Xledger's.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
import pydantic_core

from worker import logs, metrics
from worker.contracts import Receipt, ReceiptLine, Submission
from worker.core.endpoints import UrlPolicy, url_allowed
from worker.xledger.errors import (
    AnswerUnclear,
    AuthFailed,
    CreditsExhausted,
    LookupFailed,
    RateLimited,
    Refused,
    TransientError,
    UnknownOutcome,
    XledgerError,
)
from worker.xledger.pacing import Clock, NotSent, Pacer, Sleep, TokenGate
from worker.xledger.refusal_memory import RefusalMemory
from worker.xledger.secrets import MissingToken, SecretStore, Token
from worker.xledger.wire import (
    ADD_GL_IMPORT_ITEMS,
    LOOKUP_ROOTS,
    MAX_PAYMENTS_PER_REQUEST,
    Lookup,
    LookupNode,
    blame,
    lookup_query,
    lookup_variables,
    mutation_inputs,
    postings,
    read_answer,
    read_lookup,
    read_mutation,
    receipt_db_id,
)

log = logs.get("worker.xledger")

LOOKUP = "lookup"
POST = "post"
# External identifiers per lookup request: a payment's two lines, 2,500 payments. Keeps a
# request's body and answer small (Xledger charges per MB too) and within its 10,000
# records per query, with room for doubles.
LOOKUP_IDS_PER_REQUEST = 5_000

# The caller's answer to "do you still own these payments?", sync or async. Asked just
# before each mutation is sent.
Fence = Callable[[], Awaitable[bool]] | Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom a tenant's payments are posted (from its register snapshot)."""

    tenant_id: str
    url: str
    token_ref: str
    test_tenant: bool = False


class HoldReason(StrEnum):
    """Why payments are held: no outcome yet, and the caller must post them again later."""

    TOKEN = "token"  # the tenant's token is missing or refused: a fault of the tenant
    # Sent with an unknown outcome, or never found absent by a lookup (Xledger not
    # answering): they may be in Xledger. Posted again not before `retry_at`, lookup first.
    UNRESOLVED = "unresolved"


@dataclass
class PostResult:
    receipts: list[Receipt] = field(default_factory=list)
    refused: list[tuple[Submission, str]] = field(default_factory=list)  # Xledger's message
    # Not posted after the retries, and known not to be in Xledger: (code, message).
    failed: list[tuple[Submission, str, str]] = field(default_factory=list)
    # No outcome yet: the caller holds them and posts them again later (`held_reason`).
    held: list[Submission] = field(default_factory=list)
    held_why: str = ""
    held_reason: HoldReason | None = None
    # UNRESOLVED: not to be looked up before this (the client's clock): the settle time
    # after an unknown outcome, or a backoff when Xledger could not be asked.
    retry_at: float | None = None
    # Of the held: sent in a mutation whose outcome is unknown (the settle time runs).
    unknown: set[str] = field(default_factory=set)
    # Not posted because the caller no longer owns them (its `fence` said so): another
    # worker posts them now. No outcome here, on purpose.
    abandoned: list[Submission] = field(default_factory=list)
    requests: int = 0
    # External identifiers Xledger holds more than once (R18: reported, never hidden).
    duplicates: list[str] = field(default_factory=list)
    # `find()` only: the payments Xledger lacks.
    absent: list[Submission] = field(default_factory=list)


@dataclass
class ClientSettings:
    """The client's knobs; the burst, concurrency and credits ones are read by pacing."""

    timeout_s: float = 10.0  # httpx's, per phase (connect, write, pool); reads: the deadline
    # The whole request, hard: "in flight" ends here, so a hand-over can wait for it.
    request_deadline_s: float = 15.0
    # A lookup older than this when its mutation is about to leave is asked again.
    relookup_after_s: float = 1.0
    # After an unknown outcome, the lookup that decides a resend waits this long: Xledger
    # may still be storing the first request (R14, decided 12-06). It has no idempotency
    # key: a request stored later than this is the one residual risk (`reconcile`).
    settle_s: float = 60.0
    # Held because Xledger could not be asked (a lookup failed): asked again after this.
    unresolved_retry_s: float = 10.0
    max_attempts: int = 8  # per batch, for retryable failures ...
    # ... and never before Xledger has been failing this long: an outage of minutes is
    # waited out (every tenant holds its payments), not turned into dead letters.
    outage_patience_s: float = 30 * 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    burst_limit: int = 20  # Xledger: 20 requests per 5 s per token
    burst_window_s: float = 5.0
    burst_headroom: int = 2  # stay below the limit so steady state never meets it
    concurrency: int = 2  # requests in flight per token
    credits_pause_s: float = 20 * 60.0  # Xledger's own sample waits 20 min
    # A code Xledger refused is refused without asking for a payment's first submission
    # for this long (`refusal_memory.py`); 0 asks every time.
    refusal_memory_s: float = 300.0
    transaction_source: str = "GL"

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s < self.request_deadline_s:
            raise ValueError(
                f"the per-phase timeout ({self.timeout_s} s) must be below the request "
                f"deadline ({self.request_deadline_s} s)"
            )
        if self.settle_s < self.request_deadline_s:
            raise ValueError(
                f"the settle time ({self.settle_s:g} s) must be at least the request deadline "
                f"({self.request_deadline_s:g} s): Xledger may still be storing a request "
                "its client stopped waiting for"
            )


class XledgerClient:
    def __init__(
        self,
        secrets: SecretStore,
        *,
        policy: UrlPolicy | None = None,
        endpoint_override: str | None = None,
        settings: ClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
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
            # Connecting and sending are quick or failing; an answer may take Xledger up to
            # the request deadline (which bounds the whole request anyway): waiting less
            # would make a slow but sure answer an unknown outcome.
            timeout=httpx.Timeout(self.s.timeout_s, read=self.s.request_deadline_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,  # a redirect must never carry the token elsewhere
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self.clock = clock  # the clock of PostResult.retry_at
        self._pacer = Pacer(self.s, clock=clock, sleep=sleep)
        self.refusals = RefusalMemory(self.s.refusal_memory_s, clock)

    @property
    def request_deadline_s(self) -> float:
        """No request is in flight longer than this: a request sent has its answer, or its
        outcome is unknown (and is looked up before anything is sent again), by then."""
        return self.s.request_deadline_s

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> XledgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- public -----------------------------------------------------------------------

    async def post(
        self,
        target: Target,
        submissions: Sequence[Submission],
        fence: Fence | None = None,
        first: Collection[str] = (),
    ) -> PostResult:
        """Post one tenant's submissions; every one ends in receipts, refused, failed, held
        or abandoned. Each is looked up first (R14, decided 12-06). `fence` (sync or async)
        is asked just before each mutation is sent, after any wait: False means the caller
        no longer owns these payments, and nothing more is sent (the rest is abandoned).
        `first`: payment ids whose submission is their first evaluation (not a resend, a
        replay or a re-evaluation): once a lookup says Xledger lacks one, a code Xledger
        refused lately refuses it without a mutation (`refusal_memory.py`). Raises only for
        a caller's mistake (another tenant's submissions), never for what Xledger answers."""
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
        if not url_allowed(target.url, test_tenant=target.test_tenant, policy=self.policy):
            return _fail_all(
                result,
                unique,
                "url_not_allowed",
                f"URL {target.url} is not an allowed Xledger URL (R2)",
            )
        try:
            token = self.secrets.token(target.token_ref)
        except MissingToken as exc:
            result.held, result.held_why = list(submissions), logs.mask(str(exc))
            result.held_reason = HoldReason.TOKEN
            return result
        call = self._call(target, token, result, fence)
        await call.post_all(unique, set(first))
        # Duplicates of a payment within the call share its outcome.
        if len(unique) != len(submissions):
            _share_outcomes(result, submissions, posted)
        return result

    async def find(self, target: Target, submissions: Sequence[Submission]) -> PostResult:
        """What Xledger holds of these payments, asked and nothing posted: receipts
        (`already_present`) for the ones it holds, `refused` for a half voucher, and the
        ones it lacks in `failed`'s place as `absent` (R18: a payment is evaluated again
        only after a lookup says it is absent). Raises LookupFailed when Xledger cannot
        be asked."""
        if not url_allowed(target.url, test_tenant=target.test_tenant, policy=self.policy):
            raise LookupFailed(f"URL {target.url} is not an allowed Xledger URL (R2)")
        try:
            token = self.secrets.token(target.token_ref)
        except MissingToken as exc:
            raise LookupFailed(logs.mask(str(exc))) from None
        result = PostResult()
        call = self._call(target, token, result, None)
        try:
            result.absent = await call.drop_present(list(submissions))
        except _GiveUp as exc:
            raise LookupFailed(logs.mask(exc.message)) from None
        except XledgerError as exc:
            raise LookupFailed(logs.mask(f"{exc.code}: {exc}")) from None
        return result

    async def lookup(
        self, target: Target, ext_ids: Sequence[str], *, details: bool = False
    ) -> Lookup:
        """What Xledger holds of these external identifiers, in staging and the journal:
        read only, paced and retried as posting is. `details` adds account, amount and
        date (for a reconciliation). Raises LookupFailed when Xledger cannot be asked."""
        if not url_allowed(target.url, test_tenant=target.test_tenant, policy=self.policy):
            raise LookupFailed(f"URL {target.url} is not an allowed Xledger URL (R2)")
        try:
            token = self.secrets.token(target.token_ref)
        except MissingToken as exc:
            raise LookupFailed(logs.mask(str(exc))) from None
        call = self._call(target, token, PostResult(), None)
        try:
            return await call.retrying(LOOKUP, lambda: call.lookup(list(ext_ids), details))
        except _GiveUp as exc:
            raise LookupFailed(logs.mask(exc.message)) from None
        except XledgerError as exc:  # the token refused, or an answer not retried
            raise LookupFailed(logs.mask(f"{exc.code}: {exc}")) from None

    def token_fingerprint(self, token_ref: str) -> str | None:
        """A digest of the token now in force for `token_ref` (None: none is), to tell
        when an operator has put a new one in place. Never the token itself."""
        try:
            token = self.secrets.token(token_ref)
        except MissingToken:
            return None
        return token.digest()

    def ready_in(self, token_ref: str, requests: int = 2) -> float:
        """Seconds until this token may send `requests` requests without being held back.

        The post stage gathers a tenant's payments for at least this long: a batch that
        would wait for the limit anyway may as well carry more payments.
        """
        try:
            token = self.secrets.token(token_ref)
        except MissingToken:
            return 0.0
        return self._pacer.gate(token).ready_in(requests)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped."""
        ceiling = min(self.s.backoff_cap_s, self.s.backoff_base_s * (2 ** (attempt - 1)))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _call(self, target: Target, token: Token, result: PostResult, fence: Fence | None) -> _Call:
        return _Call(
            target,
            self.endpoint_override or target.url,
            token,
            result,
            settings=self.s,
            http=self._http,
            gate=self._pacer.gate(token),
            sleep=self._sleep,
            clock=self._clock,
            backoff=self.backoff,
            fence=fence,
            refusals=self.refusals,
        )


def _fail_all(
    result: PostResult, subs: Sequence[Submission], code: str, message: str
) -> PostResult:
    """Hand `subs` back as failed, with the code and message the dead letter will carry."""
    message = logs.mask(message)
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


def _share_outcomes(
    result: PostResult, submissions: Sequence[Submission], posted: dict[str, Submission]
) -> None:
    """A payment submitted twice in one call was posted once; both copies get its outcome."""
    receipts = {r.payment_id: r for r in result.receipts}
    refused = {s.payment_id: m for s, m in result.refused}
    failed = {s.payment_id: (c, m) for s, c, m in result.failed}
    held = {s.payment_id for s in result.held}
    abandoned = {s.payment_id for s in result.abandoned}
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
        elif pid in held:
            result.held.append(sub)
        elif pid in abandoned:
            result.abandoned.append(sub)


async def _owned(fence: Fence) -> bool:
    answer = fence()
    if inspect.isawaitable(answer):
        answer = await answer
    return bool(answer)


class _Call:
    """One `post()` call: a tenant, its token and the running result, and the client's
    means to send (its settings, HTTP client, the token's gate, sleep and backoff)."""

    def __init__(
        self,
        target: Target,
        url: str,
        token: Token,
        result: PostResult,
        *,
        settings: ClientSettings,
        http: httpx.AsyncClient,
        gate: TokenGate,
        sleep: Sleep,
        clock: Clock,
        backoff: Callable[[int], float],
        fence: Fence | None = None,
        refusals: RefusalMemory | None = None,
    ) -> None:
        self.s = settings
        self.refusals = refusals or RefusalMemory(0.0, clock)
        self.clock = clock
        self.fence = fence
        self.failing_since: float | None = None
        self.http = http
        self.gate = gate
        self.sleep = sleep
        self.backoff = backoff
        self.target = target
        self.tenant = target.tenant_id
        self.url = url
        self.token = token
        self.result = result
        self.attempts = 0
        self.all: list[Submission] = []
        # Payment id → when a lookup of this call last answered that Xledger lacks it.
        self.looked_at: dict[str, float] = {}
        # Sent in a mutation whose outcome is unknown, and not looked up since: they may
        # be in Xledger, so they are never handed back as failed.
        self.uncertain: set[str] = set()
        self.settle_until: float | None = None  # the latest unknown outcome's settle end

    async def post_all(self, subs: list[Submission], first: set[str] | None = None) -> None:
        """One lookup for the call, always (R14, decided 12-06: whatever the caller's own
        state says), then mutations of at most 250 payments each."""
        self.all = subs
        try:
            absent = await self.drop_present(subs)
            if first:
                absent = self._refuse_remembered(absent, first)
            for start in range(0, len(absent), MAX_PAYMENTS_PER_REQUEST):
                await self._post_absent(absent[start : start + MAX_PAYMENTS_PER_REQUEST])
        except _GiveUp as exc:
            self._give_up(exc.code, exc.message)
        except AuthFailed as exc:
            # Every payment without an outcome yet is held: the token is at fault.
            self._hold(self._left(), HoldReason.TOKEN, str(exc))
        except _Fenced:
            self._hold_unknown()  # they stay ours until they have settled and are looked up
            self.result.abandoned = self._left()
            log.warning(
                "xledger_post_abandoned",
                tenant_id=self.tenant,
                payments=len(self.result.abandoned),
                why="the caller's fence said no before the mutation: the partition moved to "
                "another worker, or the tenant was paused by hand",
            )
        except Exception as exc:  # an answer nobody foresaw, or a bug: keep what posted
            log.exception("xledger_post_unexpected_error", tenant_id=self.tenant)
            self._hold(self._left(), HoldReason.UNRESOLVED, f"{type(exc).__name__}: {exc}")
        self._hold_unknown()

    def _hold_unknown(self) -> None:
        """What was sent with an unknown outcome and has no other outcome: held."""
        unsure = [s for s in self._left() if s.payment_id in self.uncertain]
        why = "the outcome of their mutation is unknown: looked up after the settle time"
        self._hold(unsure, HoldReason.UNRESOLVED, why)

    def _refuse_remembered(self, absent: list[Submission], first: set[str]) -> list[Submission]:
        """Payments a lookup found absent whose first evaluation carries a code Xledger
        refused lately: refused with Xledger's own words, no mutation sent."""
        new = [s for s in absent if s.payment_id in first]
        remembered = self.refusals.refused(self.tenant, new) if new else {}
        for sub in new:
            if sub.payment_id in remembered:
                self._refuse(sub, remembered[sub.payment_id], asked=False)
        return [s for s in absent if s.payment_id not in remembered]

    def _left(self) -> list[Submission]:
        held = {s.payment_id for s in self.result.held}
        done = (
            {r.payment_id for r in self.result.receipts}
            | {s.payment_id for s, _ in self.result.refused}
            | {s.payment_id for s, _, _ in self.result.failed}
        )
        return [s for s in self.all if s.payment_id not in done | held]

    def _give_up(self, code: str, message: str) -> None:
        """Retries are spent. A payment fails (its dead letter carries the code and
        message) only when a lookup of this call said Xledger lacks it and nothing of it
        was sent since with an unknown outcome; every other may be in Xledger, and is held
        (R14, decided 12-06: never dead-lettered before a lookup says it is absent)."""
        left = self._left()
        absent = [
            s for s in left if s.payment_id in self.looked_at and s.payment_id not in self.uncertain
        ]
        _fail_all(self.result, absent, code, message)
        self._hold([s for s in left if s not in absent], HoldReason.UNRESOLVED, message)

    def _hold(self, subs: list[Submission], reason: HoldReason, why: str) -> None:
        """Held: no outcome yet. Those sent with an unknown outcome are not to be looked
        up before their settle time has passed; the others, for an unresolved reason,
        after a short wait (`retry_at`); for the token, when it changes."""
        if not subs:
            return
        unknown = {s.payment_id for s in subs} & self.uncertain
        if unknown:
            self.result.unknown |= unknown
            self._not_before(self.settle_until or self.clock() + self.s.settle_s)
        if reason is HoldReason.UNRESOLVED and len(unknown) < len(subs):
            self._not_before(self.clock() + self.s.unresolved_retry_s)
        self.result.held = [*self.result.held, *subs]
        if self.result.held_reason is not HoldReason.TOKEN:  # the tenant's fault first
            self.result.held_reason = reason
            self.result.held_why = logs.mask(why)
        if reason is HoldReason.UNRESOLVED:
            metrics.XLEDGER_PAYMENTS.labels(self.tenant, "unresolved").inc(len(subs))
            log.error(
                "xledger_outcome_unresolved",
                tenant_id=self.tenant,
                payments=len(subs),
                error=logs.mask(why),
                action="held: they may be in Xledger; posting them again starts with a lookup",
            )

    def _not_before(self, at: float) -> None:
        self.result.retry_at = max(at, self.result.retry_at or at)

    async def drop_present(self, subs: list[Submission]) -> list[Submission]:
        """Receipts for the payments Xledger already holds; returns the ones it does not."""
        ids = [line.extIdentifier for s in subs for line in s.lines]
        found: Lookup = await self.retrying(LOOKUP, lambda: self.lookup(ids))
        answered = self.clock()
        nodes = found.by_ext_id()
        absent = []
        for sub in subs:
            self.uncertain.discard(sub.payment_id)
            held = [nodes.get(line.extIdentifier, []) for line in sub.lines]
            doubled = self._doubles(sub, held)
            if all(held):
                db_ids = [receipt_db_id(n) for n in held]
                self._receipt(sub, db_ids, "lookup", already_present=True, doubled=doubled)
            elif any(held):
                # Half a voucher in Xledger: posting the rest could unbalance it, and
                # re-posting all would double a line. A person must look.
                log.error(
                    "xledger_partial_voucher", tenant_id=self.tenant, payment_id=sub.payment_id
                )
                self._refuse(
                    sub, "Bare én av to linjer finnes i Xledger; bilaget må kontrolleres manuelt."
                )
            else:
                self.looked_at[sub.payment_id] = answered
                absent.append(sub)
        return absent

    def _doubles(self, sub: Submission, held: list[list[LookupNode]]) -> list[str]:
        """The payment's lines Xledger holds more than once: logged, counted, returned."""
        lines = zip(sub.lines, held, strict=True)
        doubled = [line.extIdentifier for line, nodes in lines if postings(nodes) > 1]
        if doubled:
            self.result.duplicates.extend(doubled)
            metrics.XLEDGER_DUPLICATES_DETECTED.labels(self.tenant).inc()
            log.error(
                "xledger_duplicate_detected",
                tenant_id=self.tenant,
                payment_id=sub.payment_id,
                ext_identifiers=doubled,
                db_ids=sorted({n.db_id for nodes in held for n in nodes}),
                action="Xledger holds this voucher more than once: post nothing by hand; "
                "run `worker reconcile`, and have finance staff reverse the extra voucher",
            )
        return doubled

    async def _post_absent(self, subs: list[Submission]) -> None:
        """Post payments known to be absent; bisect on refusal; look again on doubt."""
        while subs:
            try:
                batch_id, db_ids = await self.retrying(
                    POST, functools.partial(self._mutate, subs), unknown_is_final=True
                )
            except _Stale:
                # Waited too long since the lookup (limits, credits, backoff): another
                # worker may have posted them meanwhile. Ask again, once both fit.
                await self._room_for(2)
                subs = await self.drop_present(subs)
                continue
            except Refused as exc:
                self.refusals.note(self.tenant, exc.messages)
                # Nothing public says a mutation is all or nothing: Xledger may have stored
                # part of a batch, or one line of a voucher. Look before refusing a payment
                # or posting any of it again (R14: never rejected before a lookup says it
                # is absent).
                subs = await self.drop_present(subs)
                if not subs:
                    return
                blamed = blame(exc.messages, subs)
                if blamed and len(blamed) < len(subs):
                    # Xledger named the refused codes: refuse exactly the payments that
                    # carry them and post the rest as one batch.
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
            except AnswerUnclear as exc:
                # Xledger is done with it: ask now (an attempt spent: an answer that stays
                # unclear must end, held, as it may be stored).
                await self._back_off(POST, exc)
                subs = await self.drop_present(subs)
                continue
            except UnknownOutcome as exc:
                # The batch may be in Xledger, or be stored later still: send nothing more
                # of it now. The caller holds it for the settle time, then looks it up.
                self.settle_until = self.clock() + self.s.settle_s
                metrics.XLEDGER_PAYMENTS.labels(self.tenant, "unknown_outcome").inc(len(subs))
                log.warning(
                    "xledger_outcome_unknown",
                    tenant_id=self.tenant,
                    payments=len(subs),
                    error=logs.mask(str(exc)),
                    settle_s=self.s.settle_s,
                    action="held; looked up after the settle time, and posted only if absent",
                )
                return
            for sub in subs:
                self._receipt(sub, [db_ids[(sub.payment_id, n)] for n in (1, 2)], batch_id)
            metrics.XLEDGER_PAYMENTS.labels(self.tenant, "posted").inc(len(subs))
            self.refusals.accepted(self.tenant, subs)
            return

    async def _room_for(self, requests: int) -> None:
        wait = self.gate.ready_in(requests)
        if wait > 0:
            await self.sleep(wait)

    async def retrying(
        self,
        operation: str,
        send: Callable[[], Awaitable[Any]],
        unknown_is_final: bool = False,
    ) -> Any:
        """Send until an answer; wait on limits; back off on transient failures.

        With `unknown_is_final` an UnknownOutcome is raised to the caller at once (who must
        let it settle and look before resending) instead of being retried blindly. A
        lookup's refusal is retried like a transient failure: a lookup changes nothing.
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
                await self.sleep(exc.wait_s)  # limits are not failures: no attempt spent
            except CreditsExhausted as exc:
                await self._pause_for_credits(exc)
            except (TransientError, UnknownOutcome, Refused) as exc:
                if isinstance(exc, Refused) and operation != LOOKUP:
                    raise
                if unknown_is_final and isinstance(exc, UnknownOutcome):
                    raise
                await self._back_off(operation, exc)

    async def _back_off(self, operation: str, exc: XledgerError) -> None:
        """Count an attempt, give up when they are spent (and patience too), else wait."""
        self.attempts += 1
        metrics.XLEDGER_RETRIES.labels(self.tenant, exc.code).inc()
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        patient = now - self.failing_since < self.s.outage_patience_s
        if self.attempts >= self.s.max_attempts and not patient:
            raise _GiveUp(exc.code, f"{operation} failed {self.attempts} times: {exc}") from None
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

    async def _pause_for_credits(self, exc: CreditsExhausted) -> None:
        pause = self.gate.pause_for_credits(self.tenant, exc.reset_in_s)
        log.error(
            "xledger_credits_exhausted",
            tenant_id=self.tenant,
            pause_s=round(pause),
            action="posting for this tenant is paused; other tenants go on",
        )

    # --- the two requests ---------------------------------------------------------------

    async def lookup(self, ids: list[str], details: bool = False) -> Lookup:
        """Every node of `ids` in staging and the journal: a request per chunk of ids,
        each asking both places; a next page asks only the places that have one."""
        found = Lookup()
        for start in range(0, len(ids), LOOKUP_IDS_PER_REQUEST):
            chunk = ids[start : start + LOOKUP_IDS_PER_REQUEST]
            after: dict[str, str | None] = dict.fromkeys(LOOKUP_ROOTS)
            while after:
                roots = list(after)
                data = await self._request(
                    LOOKUP, lookup_query(roots, details), lookup_variables(chunk, after)
                )
                page = read_lookup(data, roots)
                found.nodes += page.nodes
                after = dict(page.after)
        return found

    async def _mutate(self, subs: list[Submission]) -> tuple[str, dict[tuple[str, int], int]]:
        inputs = mutation_inputs(subs, self.s.transaction_source)

        async def ready() -> None:
            # In the slot: after the pacing wait and a place in flight, right before sending.
            if self.fence is not None and not await _owned(self.fence):
                # Another worker owns these payments now and looks them up itself:
                # posting them here too, after our lookup, could post them twice.
                raise _Fenced
            since = min(self.looked_at.get(s.payment_id, float("-inf")) for s in subs)
            if self.clock() - since > self.s.relookup_after_s:
                raise _Stale
            metrics.XLEDGER_BATCH_PAYMENTS.observe(len(subs))
            # From here on they may be in Xledger, until an answer or a lookup says.
            self.uncertain.update(pids)

        pids = {s.payment_id for s in subs}
        try:
            data = await self._request(POST, ADD_GL_IMPORT_ITEMS, {"inputs": inputs}, ready)
        except (TransientError, RateLimited, CreditsExhausted, AuthFailed):
            self.uncertain.difference_update(pids)  # Xledger did nothing, or nothing reached it
            raise
        db_ids = read_mutation(data, subs)
        missing = [
            s.payment_id for s in subs if any((s.payment_id, n) not in db_ids for n in (1, 2))
        ]
        if missing:
            # An answer without every line is not a trustworthy answer: look it up.
            raise AnswerUnclear(f"answer lacks {len(missing)} payment(s)")
        return uuid.uuid4().hex, db_ids

    async def _request(
        self,
        operation: str,
        query: str,
        variables: dict[str, Any],
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        async with self.gate.slot(self.tenant):
            if before_send is not None:
                await before_send()
            self.result.requests += 1
            started = time.perf_counter()
            label = "ok"
            deadline = self.s.request_deadline_s
            try:
                async with asyncio.timeout(deadline):
                    return await self._send(query, variables)
            except TimeoutError:
                label = "deadline"
                message = f"no answer within the request deadline ({deadline:g} s)"
                # A mutation may have been stored; a lookup changed nothing.
                if operation == POST:
                    raise UnknownOutcome(message) from None
                raise TransientError(message) from None
            except XledgerError as exc:
                label = exc.code
                raise
            finally:
                metrics.XLEDGER_REQUESTS.labels(self.tenant, operation, label).inc()
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

    def _refuse(self, sub: Submission, message: str, asked: bool = True) -> None:
        """`asked`: False when Xledger refused the code for an earlier payment lately and
        this one was not sent (`refusal_memory.py`)."""
        message = logs.mask(message)  # Xledger's words go to finance staff (a rejection)
        self.result.refused.append((sub, message))
        metrics.XLEDGER_PAYMENTS.labels(self.tenant, "refused").inc()
        log.warning(
            "xledger_refused_payment",
            tenant_id=self.tenant,
            payment_id=sub.payment_id,
            error=message,
            asked=asked,
        )

    def _receipt(
        self,
        sub: Submission,
        db_ids: list[int],
        batch_id: str,
        already_present: bool = False,
        doubled: list[str] | None = None,
    ) -> None:
        self.uncertain.discard(sub.payment_id)
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
                xledger_url=self.target.url,
                token_ref=self.target.token_ref,
                duplicates_detected=doubled or [],
            )
        )
        if already_present:
            metrics.XLEDGER_PAYMENTS.labels(self.tenant, "already_present").inc()


class _Fenced(NotSent):
    """The caller's fence said it no longer owns the payments: send nothing more."""


class _Stale(NotSent):
    """The lookup is older than `relookup_after_s` at the moment of sending: ask again."""


class _GiveUp(Exception):
    """Retries are spent: the call's payments without an outcome fail, or are held where
    they may be in Xledger."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
