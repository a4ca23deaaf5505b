"""Never twice: one call of the client, from its lookup to every payment's outcome.

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

import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from worker import logs, metrics
from worker.contracts import Receipt, ReceiptLine, SubmissionFields
from worker.xledger.errors import (
    AnswerUnclear,
    AuthFailed,
    CreditsExhausted,
    RateLimited,
    Refused,
    TransientError,
    UnknownOutcome,
)
from worker.xledger.pacing import Clock, NotSent, Sleep
from worker.xledger.refusal_memory import RefusalMemory
from worker.xledger.session import LOOKUP, POST, GiveUp, Patient, Session, retrying
from worker.xledger.types import ClientSettings, Fence, HoldReason, PostResult, Target
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
    read_lookup,
    read_mutation,
    receipt_db_id,
)

log = logs.get("worker.xledger")

T = TypeVar("T")

# External identifiers per lookup request: a payment's two lines, 2,500 payments. Keeps a
# request's body and answer small (Xledger charges per MB too) and within its 10,000
# records per query, with room for doubles.
LOOKUP_IDS_PER_REQUEST = 5_000


def fail_all(
    result: PostResult, subs: Sequence[SubmissionFields], code: str, message: str
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


async def _owned(fence: Fence) -> bool:
    answer = fence()
    if inspect.isawaitable(answer):
        answer = await answer
    return bool(answer)


class Waits:
    """The seconds one call has waited, counted by the sleep it and its retries share. Not
    the call's own method: the retries (`Patient`) holding it would make each call, with
    its submissions and receipts, a reference cycle, left for Python's rare full
    collections (at the month start ~140 MB of finished calls waited for one)."""

    def __init__(self, sleep: Sleep) -> None:
        self.waited = 0.0
        self._sleep = sleep

    async def sleep(self, seconds: float) -> None:
        self.waited += seconds
        await self._sleep(seconds)


class PostingCall:
    """One call of the client (`post`, `find` or `lookup`): a tenant, its session, the
    running result and the client's settings. Its requests' retries are the call's: their
    attempts and the outage's start count across them."""

    def __init__(
        self,
        target: Target,
        session: Session,
        result: PostResult,
        *,
        settings: ClientSettings,
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
        self.session = session
        self.gate = session.gate
        # Seconds this call has waited (Xledger's limits, backoff, the budget): a lookup is
        # stale after waits, not after a slow process (a CPU-starved worker would look up
        # again and again, and never post).
        self.waits = Waits(sleep)
        self.retries = Patient(
            target.tenant_id,
            session.gate,
            settings,
            sleep=self.waits.sleep,
            clock=clock,
            backoff=backoff,
        )
        self.target = target
        self.tenant = target.tenant_id
        self.result = result
        self.all: list[SubmissionFields] = []
        # Payment id → `waited` when a lookup of this call last answered that Xledger
        # lacks it.
        self.looked_at: dict[str, float] = {}
        # Sent in a mutation whose outcome is unknown, and not looked up since: they may
        # be in Xledger, so they are never handed back as failed.
        self.uncertain: set[str] = set()
        self.settle_until: float | None = None  # the latest unknown outcome's settle end

    async def post_all(self, subs: list[SubmissionFields], first: set[str] | None = None) -> None:
        """One lookup for the call, always (R14, decided 12-06: whatever the caller's own
        state says), then mutations of at most 250 payments each."""
        self.all = subs
        try:
            absent = await self.drop_present(subs)
            if first:
                absent = self._refuse_remembered(absent, first)
            for start in range(0, len(absent), MAX_PAYMENTS_PER_REQUEST):
                await self._post_absent(absent[start : start + MAX_PAYMENTS_PER_REQUEST])
        except GiveUp as exc:
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
        self.result.requests = self.session.requests

    def _hold_unknown(self) -> None:
        """What was sent with an unknown outcome and has no other outcome: held."""
        unsure = [s for s in self._left() if s.payment_id in self.uncertain]
        why = "the outcome of their mutation is unknown: looked up after the settle time"
        self._hold(unsure, HoldReason.UNRESOLVED, why)

    def _refuse_remembered(
        self, absent: list[SubmissionFields], first: set[str]
    ) -> list[SubmissionFields]:
        """Payments a lookup found absent whose first evaluation carries a code Xledger
        refused lately: refused with Xledger's own words, no mutation sent."""
        new = [s for s in absent if s.payment_id in first]
        remembered = self.refusals.refused(self.tenant, new) if new else {}
        for sub in new:
            if sub.payment_id in remembered:
                self._refuse(sub, remembered[sub.payment_id], asked=False)
        return [s for s in absent if s.payment_id not in remembered]

    def _left(self) -> list[SubmissionFields]:
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
        fail_all(self.result, absent, code, message)
        self._hold([s for s in left if s not in absent], HoldReason.UNRESOLVED, message)

    def _hold(self, subs: list[SubmissionFields], reason: HoldReason, why: str) -> None:
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

    async def drop_present(self, subs: list[SubmissionFields]) -> list[SubmissionFields]:
        """Receipts for the payments Xledger already holds; returns the ones it does not."""
        ids = [line.extIdentifier for s in subs for line in s.lines]
        found: Lookup = await self.retrying(LOOKUP, lambda: self.lookup(ids))
        answered = self.waits.waited
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

    def _doubles(self, sub: SubmissionFields, held: list[list[LookupNode]]) -> list[str]:
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

    async def _post_absent(self, subs: list[SubmissionFields]) -> None:
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
                await self.retries.failed(POST, exc)
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
            await self.waits.sleep(wait)

    async def retrying(
        self,
        operation: str,
        send: Callable[[], Awaitable[T]],
        unknown_is_final: bool = False,
    ) -> T:
        """The session's retry loop, this call deciding: a lookup's refusal is retried like
        a transient failure (a lookup changes nothing); with `unknown_is_final` an
        UnknownOutcome is the caller's at once (it lets it settle and looks first)."""
        return await retrying(
            operation,
            send,
            self.retries,
            retry_refused=operation == LOOKUP,
            unknown_is_final=unknown_is_final,
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
                data = await self.session.request(
                    LOOKUP, lookup_query(roots, details), lookup_variables(chunk, after)
                )
                page = read_lookup(data, roots)
                found.nodes += page.nodes
                after = dict(page.after)
        return found

    async def _mutate(self, subs: list[SubmissionFields]) -> tuple[str, dict[tuple[str, int], int]]:
        inputs = mutation_inputs(subs, self.s.transaction_source)

        async def ready() -> None:
            # In the slot: after the pacing wait and a place in flight, right before sending.
            if self.fence is not None and not await _owned(self.fence):
                # Another worker owns these payments now and looks them up itself:
                # posting them here too, after our lookup, could post them twice.
                raise _Fenced
            since = min(self.looked_at.get(s.payment_id, float("-inf")) for s in subs)
            if self.waits.waited - since > self.s.relookup_after_s:
                raise _Stale
            metrics.XLEDGER_BATCH_PAYMENTS.observe(len(subs))
            # From here on they may be in Xledger, until an answer or a lookup says.
            self.uncertain.update(pids)

        pids = {s.payment_id for s in subs}
        try:
            data = await self.session.request(POST, ADD_GL_IMPORT_ITEMS, {"inputs": inputs}, ready)
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

    def _refuse(self, sub: SubmissionFields, message: str, asked: bool = True) -> None:
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
        sub: SubmissionFields,
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
    """The call has waited longer than `relookup_after_s` since the lookup: ask again."""
