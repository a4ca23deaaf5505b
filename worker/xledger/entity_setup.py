"""An Xledger entity's setup, read for `worker preflight`: its accounts, object kinds and
values (VAT codes among them), projects, bank accounts, currencies, and which object kind
sits in which glObject field.

Read only, and through the worker's own session (`session.py`): with the tenant's own
token (R5), sent only to a URL R2 allows (a loopback sandbox only in sandbox mode), paced
per token as the worker is (the client's settings). A command gives up sooner than the
worker: Xledger's short limits are waited out, anything longer is `SetupUnreadable`.
What is seen in public code and what is inferred: `setup_wire.py` and xledger.md.

A tenant's setup takes three requests (each one costs the customer a credit):

1. its lists in one document: currencies, accounts, object kinds, the entity's bank
   accounts and, when a dimension posts to `project`, projects. No `viewer`/`me` query is
   known from xledger.md, so this real read is the token check too: answered, the token
   is accepted and reaches the entity;
2. `entities { glSetupEntries }`: which object kind sits in glObject1…5. Its shape is the
   least certain (inferred), so it is asked alone and a refusal of it is tolerated: the
   dimension values are then looked for among every object kind;
3. `objectValues` of the kinds the dimensions need and of TAX_RULE (VAT codes are its
   values: there is no `taxRules` list), five kinds to a document.

A next page asks only the lists that have one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from worker import logs
from worker.contracts.submission import GL_OBJECT_FIELDS
from worker.core.endpoints import UrlPolicy
from worker.xledger.errors import CreditsExhausted, RateLimited, Refused, XledgerError
from worker.xledger.pacing import Clock, Sleep
from worker.xledger.secrets import SecretStore
from worker.xledger.session import (
    SETUP,
    Retries,
    Session,
    SessionSettings,
    XledgerHttp,
    retrying,
)
from worker.xledger.setup_wire import (
    ACCOUNTS,
    BANK_ACCOUNTS,
    CURRENCIES,
    ENTITIES,
    MAX_LISTS_PER_DOCUMENT,
    OBJECT_KINDS,
    PAGE_SIZE,
    PROJECTS,
    ListRead,
    UnreadableAnswer,
    read_page,
    setup_document,
    setup_variables,
    values_read,
)
from worker.xledger.types import ClientSettings, Target

TAX_RULE = "TAX_RULE"  # the object kind whose values are the VAT codes (xledger.md)
MAX_LIMIT_WAIT_S = 60.0


# --- what is read -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    db_id: int
    code: str
    description: str | None = None
    posting: bool | None = None  # False: Xledger will not take postings on it


@dataclass(frozen=True, slots=True)
class ObjectKind:
    db_id: int
    name: str


@dataclass(frozen=True, slots=True)
class ObjectValue:
    db_id: int
    code: str
    kind_db_id: int
    description: str | None = None
    posting: bool | None = None
    date_from: str | None = None
    date_to: str | None = None


@dataclass(frozen=True, slots=True)
class Project:
    db_id: int
    code: str
    description: str | None = None
    allow_posting: bool | None = None
    from_date: str | None = None
    to_date: str | None = None


@dataclass(frozen=True, slots=True)
class BankAccount:
    """One of the entity's bank accounts; its dbId is the Bankkonti-pkey (R4, inferred)."""

    db_id: int
    code: str | None = None
    description: str | None = None
    account_number: str | None = None
    account_db_id: int | None = None  # the GL account it is linked to


@dataclass(frozen=True, slots=True)
class Currency:
    db_id: int
    code: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class SetupEntry:
    """One of an entity's glSetupEntries: the object kind in a GL field."""

    gl_field: str  # as Xledger names it; `field_key` compares names
    kind_db_id: int | None
    kind_name: str | None


@dataclass(frozen=True, slots=True)
class EntityInfo:
    db_id: int
    description: str | None
    setup: tuple[SetupEntry, ...]


def field_key(name: str) -> str:
    """A GL field's name made comparable: `glObject1`, `GL_OBJECT_1` and `GLObject1` are
    one field (nothing public shows how Xledger spells them in glSetupEntries)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass
class EntitySetup:
    """What Xledger showed of one tenant's entity."""

    accounts: dict[str, Account] = field(default_factory=dict)  # by code
    kinds: list[ObjectKind] = field(default_factory=list)
    values: dict[int, dict[str, ObjectValue]] = field(default_factory=dict)  # kind → code →
    bank_accounts: dict[int, BankAccount] = field(default_factory=dict)  # by dbId
    currencies: dict[str, Currency] = field(default_factory=dict)  # by code
    projects: dict[str, Project] | None = None  # None: not read (no dimension posts there)
    # None: Xledger refused the glSetupEntries query, so which kind sits where is unknown.
    entities: list[EntityInfo] | None = None
    requests: int = 0

    def account_code(self, db_id: int | None) -> str | None:
        return next((a.code for a in self.accounts.values() if a.db_id == db_id), None)

    def tax_kind(self) -> ObjectKind | None:
        return next((k for k in self.kinds if k.name.upper() == TAX_RULE), None)

    def setup_known(self) -> bool:
        """Whether Xledger said which object kind sits in which GL field."""
        return bool(self.entities) and any(e.setup for e in self.entities or [])

    def field_kinds(self, gl_field: str) -> list[ObjectKind] | None:
        """The object kinds set up in `gl_field` (glObject1…5) by the entities the token
        reaches; None when Xledger did not say which kind sits where."""
        if not self.setup_known():
            return None
        wanted = field_key(gl_field)
        ids = {
            s.kind_db_id
            for e in self.entities or []
            for s in e.setup
            if field_key(s.gl_field) == wanted and s.kind_db_id is not None
        }
        by_id = {k.db_id: k for k in self.kinds}
        names = {
            s.kind_db_id: s.kind_name for e in self.entities or [] for s in e.setup if s.kind_name
        }
        return [by_id.get(i) or ObjectKind(i, names.get(i) or str(i)) for i in sorted(ids)]

    def candidate_kinds(self, gl_field: str) -> list[ObjectKind]:
        """Where a value of `gl_field` may be: its kinds, or, when that is unknown, every
        kind but TAX_RULE."""
        kinds = self.field_kinds(gl_field)
        if kinds is not None:
            return kinds
        tax = self.tax_kind()
        return [k for k in self.kinds if tax is None or k.db_id != tax.db_id]

    def object_value(self, gl_field: str, code: str) -> ObjectValue | None:
        for kind in self.candidate_kinds(gl_field):
            value = self.values.get(kind.db_id, {}).get(code)
            if value is not None:
                return value
        return None

    def tax_codes(self) -> dict[str, ObjectValue] | None:
        """The VAT codes (the values of the kind TAX_RULE); None when there is no such kind."""
        kind = self.tax_kind()
        return None if kind is None else self.values.get(kind.db_id, {})

    def bank_accounts_linked_to(self, account_code: str) -> list[BankAccount]:
        account = self.accounts.get(account_code)
        if account is None:
            return []
        return [b for b in self.bank_accounts.values() if b.account_db_id == account.db_id]

    def kinds_to_read(self, gl_fields: Iterable[str]) -> list[ObjectKind]:
        """The kinds whose values the checks of these fields need, TAX_RULE included."""
        out: dict[int, ObjectKind] = {}
        for f in gl_fields:
            out.update((k.db_id, k) for k in self.candidate_kinds(f))
        tax = self.tax_kind()
        if tax is not None:
            out[tax.db_id] = tax
        return [out[i] for i in sorted(out)]


# --- errors -------------------------------------------------------------------------------


class SetupUnreadable(Exception):
    """Xledger could not be read (unreachable, failing after retries, credits used up, a
    read refused, an answer of the wrong shape, a URL R2 does not allow): nothing is known.
    The message says why; it never holds a token."""


# --- the reader ---------------------------------------------------------------------------


class SetupReader:
    """Reads tenants' entity setups from Xledger. `read` raises `MissingToken` (no token
    for the tenant), `AuthFailed` (Xledger refused it) or `SetupUnreadable`."""

    def __init__(
        self,
        secrets: SecretStore,
        *,
        policy: UrlPolicy | None = None,
        endpoint_override: str | None = None,
        pacing: SessionSettings | None = None,
        max_attempts: int = 4,
        page_size: int = PAGE_SIZE,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.secrets = secrets
        self.max_attempts = max_attempts
        self.page_size = page_size
        self._sleep = sleep
        # The worker's session and settings: 18 requests per 5 s per token, 2 in flight.
        self._http = XledgerHttp(
            pacing or ClientSettings(),
            policy=policy,
            endpoint_override=endpoint_override,
            transport=transport,
            clock=clock,
            sleep=sleep,
        )
        self.endpoint_override = endpoint_override

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> SetupReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def url_for(self, target: Target) -> str:
        """Where the requests for `target` go: its URL, or the sandbox standing in for it."""
        return self._http.url_for(target)

    async def read(
        self, target: Target, gl_fields: Collection[str] = (), *, projects: bool = False
    ) -> EntitySetup:
        """The setup of `target`'s entity: everything, the values of the kinds in
        `gl_fields` (glObject1…5) and of TAX_RULE, and projects when asked."""
        refused = self._http.url_refused(target)
        if refused is not None:
            raise SetupUnreadable(refused)
        token = self.secrets.token(target.token_ref)  # MissingToken: the caller's to report
        call = _Reads(
            self._http.session(target, token),
            self.page_size,
            lambda: _GiveUpSoon(self.max_attempts, self._sleep),
        )
        setup = EntitySetup()
        lists = [ListRead(r, r) for r in (CURRENCIES, ACCOUNTS, OBJECT_KINDS, BANK_ACCOUNTS)]
        if projects:
            lists.append(ListRead(PROJECTS, PROJECTS))
        _fill(setup, await call.read_all(lists))
        try:
            entities = await call.read_lists([ListRead(ENTITIES, ENTITIES)])
            setup.entities = [_entity(n) for n in entities[ENTITIES]]
        except Refused:
            setup.entities = None  # the shape is inferred: check against every kind instead
        kinds = setup.kinds_to_read(f for f in gl_fields if f in GL_OBJECT_FIELDS)
        for start in range(0, len(kinds), MAX_LISTS_PER_DOCUMENT):
            chunk = [values_read(k.db_id) for k in kinds[start : start + MAX_LISTS_PER_DOCUMENT]]
            found = await call.read_all(chunk)
            for r in chunk:
                assert r.kind_db_id is not None
                setup.values[r.kind_db_id] = {
                    v.code: v for v in (_value(n, r.kind_db_id) for n in found[r.alias]) if v
                }
        setup.requests = call.session.requests
        return setup


class _GiveUpSoon:
    """A command's retries for one request: Xledger's short limits waited out, failures
    that changed nothing (a read changes nothing) tried a few times, then SetupUnreadable."""

    def __init__(self, max_attempts: int, sleep: Sleep) -> None:
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.attempts = self.limit_waits = 0

    async def rate_limited(self, exc: RateLimited) -> None:
        self.limit_waits += 1
        # Burst and concurrency limits clear in seconds; a command does not sit out
        # anything longer.
        if self.limit_waits > 10 or exc.wait_s > MAX_LIMIT_WAIT_S:
            raise SetupUnreadable(
                f"Xledger answered {exc.code} (wait {exc.wait_s:.0f} s); try again later"
            )
        await self.sleep(exc.wait_s)

    async def out_of_credits(self, exc: CreditsExhausted) -> None:
        raise SetupUnreadable(
            "Xledger says the customer's request credits are used up "
            "(INSUFFICIENT_CREDITS); try again when they are renewed"
        )

    async def failed(self, operation: str, exc: XledgerError) -> None:
        self.attempts += 1
        if self.attempts >= self.max_attempts:
            raise SetupUnreadable(
                f"Xledger did not answer after {self.attempts} attempts: {logs.mask(str(exc))}"
            )
        await self.sleep(min(5.0, 0.5 * 2 ** (self.attempts - 1)))


class _Reads:
    """One tenant's reads, over its session."""

    def __init__(self, session: Session, page_size: int, retries: Callable[[], Retries]) -> None:
        self.session = session
        self.page_size = page_size
        self.retries = retries  # afresh for each request

    async def read_all(self, reads: Sequence[ListRead]) -> dict[str, list[dict[str, Any]]]:
        """`read_lists`, where a refusal means nothing can be known."""
        try:
            return await self.read_lists(reads)
        except Refused as exc:
            raise SetupUnreadable(f"Xledger refused the read: {exc}") from None

    async def read_lists(self, reads: Sequence[ListRead]) -> dict[str, list[dict[str, Any]]]:
        """Every node of each list, paging until none has a next page. Raises AuthFailed
        and Refused as Xledger answered them; SetupUnreadable when nothing can be known."""
        out: dict[str, list[dict[str, Any]]] = {r.alias: [] for r in reads}
        after: dict[str, str | None] = dict.fromkeys(out)
        pending = list(reads)
        while pending:
            data = await self.request(
                setup_document(pending),
                setup_variables(pending, after, self.page_size),
            )
            try:
                page = read_page(data, pending)
            except UnreadableAnswer as exc:
                raise SetupUnreadable(f"unreadable answer from Xledger: {exc}") from None
            for alias, nodes in page.nodes.items():
                out[alias] += nodes
            after = dict(page.after)
            pending = [r for r in pending if r.alias in page.after]
        return out

    async def request(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The session's retry loop with a command's patience; Xledger's words in a
        refusal carry no token."""
        try:
            return await retrying(
                SETUP,
                lambda: self.session.request(SETUP, query, variables),
                self.retries(),
            )
        except Refused as exc:
            raise Refused([logs.mask(m) for m in exc.messages]) from None


# --- nodes into records -------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _ref_id(value: Any) -> int | None:
    db_id = value.get("dbId") if isinstance(value, dict) else None
    return db_id if isinstance(db_id, int) and not isinstance(db_id, bool) else None


def _fill(setup: EntitySetup, found: dict[str, list[dict[str, Any]]]) -> None:
    for n in found.get(CURRENCIES, []):
        if code := _text(n.get("code")):
            setup.currencies[code] = Currency(n["dbId"], code, _text(n.get("description")))
    for n in found.get(ACCOUNTS, []):
        if code := _text(n.get("code")):
            setup.accounts[code] = Account(
                n["dbId"], code, _text(n.get("description")), _flag(n.get("posting"))
            )
    setup.kinds = [
        ObjectKind(n["dbId"], name)
        for n in found.get(OBJECT_KINDS, [])
        if (name := _text(n.get("name")))
    ]
    for n in found.get(BANK_ACCOUNTS, []):
        setup.bank_accounts[n["dbId"]] = BankAccount(
            n["dbId"],
            _text(n.get("code")),
            _text(n.get("description")),
            _text(n.get("accountNumber")),
            _ref_id(n.get("account")),
        )
    if PROJECTS in found:
        setup.projects = {}
        for n in found[PROJECTS]:
            if code := _text(n.get("code")):
                setup.projects[code] = Project(
                    n["dbId"],
                    code,
                    _text(n.get("description")),
                    _flag(n.get("allowPosting")),
                    _text(n.get("fromDate")),
                    _text(n.get("toDate")),
                )


def _entity(n: dict[str, Any]) -> EntityInfo:
    entries = []
    for e in n.get("glSetupEntries") or []:
        if not isinstance(e, dict):
            continue
        name = _text((e.get("field") or {}).get("name"))
        kind = (e.get("fieldObject") or {}).get("objectKind")
        if name:
            entries.append(SetupEntry(name, _ref_id(kind), _text((kind or {}).get("name"))))
    return EntityInfo(n["dbId"], _text(n.get("description")), tuple(entries))


def _value(n: dict[str, Any], kind_db_id: int) -> ObjectValue | None:
    code = _text(n.get("code"))
    if code is None:
        return None
    return ObjectValue(
        n["dbId"],
        code,
        kind_db_id,
        _text(n.get("description")),
        _flag(n.get("posting")),
        _text(n.get("dateFrom")),
        _text(n.get("dateTo")),
    )
