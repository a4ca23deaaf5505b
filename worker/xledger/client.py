"""The Xledger client: posts Submissions with `addGLImportItems`, batched, rate-aware and
never twice, and asks what Xledger holds (`find`, `lookup`).

A call's steps, from its lookup to every payment's outcome, are `never_twice.py`'s; its
requests go through the session (`session.py`: HTTP, R2, pacing, the deadline, the retry
loop); its words are `types.py`'s (`Target`, `PostResult`, `HoldReason`, `ClientSettings`),
importable from here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

import httpx

from worker import logs
from worker.contracts import SubmissionFields
from worker.core.endpoints import UrlPolicy
from worker.xledger.errors import LookupFailed, XledgerError
from worker.xledger.never_twice import LOOKUP_IDS_PER_REQUEST, PostingCall, fail_all
from worker.xledger.pacing import Clock, Sleep
from worker.xledger.refusal_memory import RefusalMemory
from worker.xledger.secrets import MissingToken, SecretStore, Token
from worker.xledger.session import LOOKUP, GiveUp, XledgerHttp
from worker.xledger.types import ClientSettings, Fence, HoldReason, PostResult, Target
from worker.xledger.wire import ADD_GL_IMPORT_ITEMS, Lookup

__all__ = [
    "ADD_GL_IMPORT_ITEMS",
    "LOOKUP_IDS_PER_REQUEST",
    "ClientSettings",
    "Fence",
    "HoldReason",
    "PostResult",
    "Target",
    "XledgerClient",
]

T = TypeVar("T")


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
        self.secrets = secrets
        self.s = settings or ClientSettings()
        self._http = XledgerHttp(
            self.s,
            policy=policy,
            endpoint_override=endpoint_override,
            transport=transport,
            clock=clock,
            sleep=sleep,
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.clock = clock  # the clock of PostResult.retry_at
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

    async def post(
        self,
        target: Target,
        submissions: Sequence[SubmissionFields],
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
        posted: dict[str, SubmissionFields] = {}
        for sub in submissions:
            posted.setdefault(sub.payment_id, sub)
        unique = list(posted.values())
        if not unique:
            return result
        foreign = [s for s in unique if s.tenant_id != target.tenant_id]
        if foreign:  # never post one tenant's payment with another's token
            raise ValueError(f"{len(foreign)} submission(s) are not of tenant {target.tenant_id}")
        refused = self._http.url_refused(target)
        if refused is not None:
            return fail_all(result, unique, "url_not_allowed", refused)
        try:
            token = self.secrets.token(target.token_ref)
        except MissingToken as exc:
            result.held, result.held_why = list(submissions), logs.mask(str(exc))
            result.held_reason = HoldReason.TOKEN
            return result
        call = self._call(target, token, result, fence)
        async with self._http.call():
            await call.post_all(unique, set(first))
        # Duplicates of a payment within the call share its outcome.
        if len(unique) != len(submissions):
            _share_outcomes(result, submissions, posted)
        return result

    def call(self) -> contextlib.AbstractAsyncContextManager[None]:
        """One of the few places to talk to Xledger (`session.CONCURRENT_CALLS`), for a
        caller that does more than one call, or reads before it calls: `post`, `find` and
        `lookup` within it take no second one."""
        return self._http.call()

    async def find(self, target: Target, submissions: Sequence[SubmissionFields]) -> PostResult:
        """What Xledger holds of these payments, asked and nothing posted: receipts
        (`already_present`) for the ones it holds, `refused` for a half voucher, and the
        ones it lacks in `failed`'s place as `absent` (R18: a payment is evaluated again
        only after a lookup says it is absent). Raises LookupFailed when Xledger cannot
        be asked."""
        call = self._reading_call(target)
        async with self._http.call():
            call.result.absent = await _asked(lambda: call.drop_present(list(submissions)))
        call.result.requests = call.session.requests
        return call.result

    async def lookup(
        self, target: Target, ext_ids: Sequence[str], *, details: bool = False
    ) -> Lookup:
        """What Xledger holds of these external identifiers, in staging and the journal:
        read only, paced and retried as posting is. `details` adds account, amount and
        date (for a reconciliation). Raises LookupFailed when Xledger cannot be asked."""
        call = self._reading_call(target)
        async with self._http.call():
            return await _asked(
                lambda: call.retrying(LOOKUP, lambda: call.lookup(list(ext_ids), details))
            )

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
        return self._http.gate(token).ready_in(requests)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped."""
        ceiling = min(self.s.backoff_cap_s, self.s.backoff_base_s * (2 ** (attempt - 1)))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _reading_call(self, target: Target) -> PostingCall:
        """A call that only reads: raises LookupFailed for a URL R2 refuses or no token."""
        refused = self._http.url_refused(target)
        if refused is not None:
            raise LookupFailed(refused)
        try:
            token = self.secrets.token(target.token_ref)
        except MissingToken as exc:
            raise LookupFailed(logs.mask(str(exc))) from None
        return self._call(target, token, PostResult(), None)

    def _call(
        self, target: Target, token: Token, result: PostResult, fence: Fence | None
    ) -> PostingCall:
        return PostingCall(
            target,
            self._http.session(target, token),
            result,
            settings=self.s,
            sleep=self._sleep,
            clock=self.clock,
            backoff=self.backoff,
            fence=fence,
            refusals=self.refusals,
        )


async def _asked(ask: Callable[[], Awaitable[T]]) -> T:
    """`ask`'s answer; Xledger not answering it (retries spent, the token refused, an
    answer not retried) as LookupFailed, with no token in its words."""
    try:
        return await ask()
    except GiveUp as exc:
        raise LookupFailed(logs.mask(exc.message)) from None
    except XledgerError as exc:
        raise LookupFailed(logs.mask(f"{exc.code}: {exc}")) from None


def _share_outcomes(
    result: PostResult, submissions: Sequence[SubmissionFields], posted: dict[str, SubmissionFields]
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
