"""`worker preflight`: a tenant's settings and registers checked against its own Xledger
entity before its first payment, as a checklist in the order of the onboarding guide
(../shared/seed/): Oppsett Xledger, Oppsett Flyt, Økonomiinnstillinger, then a summary.

Each line is ✓ (passed), ✗ (would be refused or rejected: the line says what to do), –
(not checked because of a ✗ above, which it names) or ? (could not check: it says why).
The texts are Norwegian: the people who fix them are the municipality's finance staff and
Flyt administrators, as for rejections (`core/messages.py`).

`gather` does the I/O: the tenant's token (R5: from the secret store, never shown), its
entity's setup read from Xledger (`xledger/entity_setup.py`: read only, paced like the
worker, sent only where R2 allows). `judge` is pure: the checklist from what was gathered.
The registers are judged by the worker's own rules (`check_snapshot`, as publish-registers
and the register cache do) and the recent payments by the core's own `evaluate`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any

from worker.config import Settings
from worker.contracts import PaymentStatusEvent, RegisterSnapshot
from worker.contracts.register_snapshot import Dimension, Source
from worker.core import Enriched, RegisterIndex, check_snapshot, evaluate
from worker.core.endpoints import UrlPolicy, url_allowed
from worker.core.posting import VoucherLine
from worker.core.snapshot_record import refusal_text
from worker.xledger.client import Target
from worker.xledger.entity_setup import (
    GL_OBJECT_FIELDS,
    BankAccount,
    EntitySetup,
    ObjectKind,
    ObjectValue,
    Project,
    SetupReader,
    SetupUnreadable,
)
from worker.xledger.errors import AuthFailed
from worker.xledger.secrets import MissingToken, SecretStore, env_name

XLEDGER = "Oppsett Xledger"
FLYT = "Oppsett Flyt"
OKONOMI = "Økonomiinnstillinger"
SUMMARY = "Oppsummering"
SECTIONS = (XLEDGER, FLYT, OKONOMI, SUMMARY)

EXIT_OK = 0
EXIT_UNCHECKED = 1
EXIT_FAILED = 4

REGISTER_NAMES = {
    Source.BETALINGSTYPE: "Betalingstyper",
    Source.TILHORIGHET: "Tilhørighet",
    Source.TILTAK: "Tiltak",
    Source.BARN: "Barn",
    Source.GRUPPER: "Grupper",
}
_SETTINGS_PLACE = "Administrasjon → Innstillinger → Økonomiinnstillinger (Regnskapssystem)"
_PKEY_PLACE = "Bank → Bankkonti → Bankkonti i Xledger (debug-visning)"


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"  # would be refused or rejected: the line says what to do
    SKIPPED = "skipped"  # not checked because of a failure above, which it names
    UNCHECKED = "unchecked"  # could not check: it says why


MARKS = {Status.OK: "✓", Status.FAILED: "✗", Status.SKIPPED: "–", Status.UNCHECKED: "?"}


@dataclass
class Check:
    section: str
    key: str  # stable: url, token_found, token_accepted, motkonto, bankkonti_pkey, …
    status: Status
    text: str  # what was checked, and what was found
    todo: str | None = None  # for ✗ and ?: what to do
    xledger: bool = False  # a check against Xledger (publish-registers --preflight gates)
    codes: list[str] = field(default_factory=list)  # what Xledger lacks, e.g. "konto 10899"

    @property
    def mark(self) -> str:
        return MARKS[self.status]

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "key": self.key,
            "status": str(self.status),
            "mark": self.mark,
            "text": self.text,
            "todo": self.todo,
            "xledger": self.xledger,
            "codes": self.codes,
        }


@dataclass
class RecentOutcomes:
    """What the tenant's last Betalt payments would come to with these registers."""

    evaluated: int = 0
    would_post: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # problem code → payments
    refused: Counter[str] = field(default_factory=Counter)  # what Xledger lacks → payments
    refused_payments: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "evaluated": self.evaluated,
            "would_post": self.would_post,
            "rejected_by_worker": sum(self.rejected.values()),
            "rejected_by_code": dict(self.rejected),
            "refused_by_xledger": self.refused_payments,
            "refused_codes": dict(self.refused),
        }


@dataclass
class TenantReport:
    tenant_id: str
    version: int
    source: str
    checks: list[Check]
    recent: RecentOutcomes | None = None
    requests: int = 0  # Xledger requests made

    def lines(self, *statuses: Status) -> list[Check]:
        return [c for c in self.checks if c.status in statuses]

    @property
    def exit_code(self) -> int:
        if self.lines(Status.FAILED):
            return EXIT_FAILED
        return EXIT_UNCHECKED if self.lines(Status.UNCHECKED) else EXIT_OK

    def worker_refusals(self) -> list[Check]:
        return [c for c in self.checks if c.key == "registers" and c.status is Status.FAILED]

    def xledger_problems(self) -> list[Check]:
        """The Xledger checks that failed or could not be made: what publish-registers
        --preflight refuses to publish over."""
        return [
            c for c in self.checks if c.xledger and c.status in (Status.FAILED, Status.UNCHECKED)
        ]

    def refused_codes(self) -> list[str]:
        return [code for c in self.lines(Status.FAILED) if c.xledger for code in c.codes]

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "version": self.version,
            "source": self.source,
            "exit": self.exit_code,
            "requests": self.requests,
            "checks": [c.to_json() for c in self.checks],
            "summary": {
                "worker_would_refuse": [c.text for c in self.worker_refusals()],
                "xledger_would_refuse": self.refused_codes(),
                "recent": None if self.recent is None else self.recent.to_json(),
            },
        }


def exit_code(reports: Iterable[TenantReport]) -> int:
    """4 when anything would be refused or rejected; else 1 when anything could not be
    checked; else 0."""
    codes = {r.exit_code for r in reports}
    return EXIT_FAILED if EXIT_FAILED in codes else max(codes, default=EXIT_OK)


# --- what is gathered ---------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """Where tokens are and where requests go: the worker's own settings (R2, R5), as
    `runtime.make_client` uses them."""

    environ: Mapping[str, str]
    token_dir: Path | None = None
    sandbox: bool = False  # FLYT_SANDBOX=1: a loopback sandbox may stand in for Xledger
    endpoint_override: str | None = None  # FLYT_XLEDGER_ENDPOINT, sandbox mode only

    @classmethod
    def of(cls, s: Settings, environ: Mapping[str, str]) -> Environment:
        return cls(environ, s.token_dir, s.sandbox, s.xledger_endpoint_override)

    @property
    def policy(self) -> UrlPolicy:
        return UrlPolicy(allow_sandbox=self.sandbox)

    def check(self) -> None:
        """Refuse an endpoint override the worker's client would refuse (R2)."""
        override = self.endpoint_override
        if override is not None and not url_allowed(
            override, test_tenant=False, policy=self.policy
        ):
            raise ValueError(
                f"FLYT_XLEDGER_ENDPOINT={override} is allowed only for a loopback sandbox "
                "URL (http://127.0.0.1:PORT/graphql) with FLYT_SANDBOX=1 (R2)"
            )

    def secrets(self) -> SecretStore:
        return SecretStore(self.environ, token_dir=self.token_dir)

    def token_place(self, token_ref: str) -> str:
        """Where a token that was found came from (never the token)."""
        name = env_name(token_ref)
        if (self.environ.get(name) or "").strip():
            return f"${name}"
        directory = self.token_dir or self.environ.get("XLEDGER_TOKEN_DIR")
        return f"{directory}/{token_ref}"

    def token_places(self, token_ref: str) -> str:
        """Where the secret store looks for a token (as `SecretStore.token` does)."""
        directory = self.token_dir or self.environ.get("XLEDGER_TOKEN_DIR")
        places = f"${env_name(token_ref)}"
        return places + (f" og {directory}/{token_ref}" if directory else "")

    def reader(self, **settings: Any) -> SetupReader:
        return SetupReader(
            self.secrets(),
            policy=self.policy,
            endpoint_override=self.endpoint_override,
            **settings,
        )


@dataclass
class Gathered:
    """Everything `judge` needs about one tenant."""

    snapshot: RegisterSnapshot
    source: str  # where the snapshot came from, for the heading
    policy: UrlPolicy
    sent_to: str | None = None  # where the requests went, when not the snapshot's URL
    token_place: str | None = None
    token_missing: str | None = None  # where it was looked for
    token_refused: str | None = None
    unreadable: str | None = None  # why Xledger could not be read
    setup: EntitySetup | None = None
    # R13 is judged against the snapshot in force, which only the registers topic knows.
    judge_roles: bool = False
    is_in_force: bool = False  # the snapshot is the one in force: the worker accepted it
    in_force: RegisterSnapshot | None = None
    recent: list[PaymentStatusEvent] | None = None  # newest first; None: not read
    recent_note: str = "ingen broker: --bootstrap eller FLYT_BOOTSTRAP_SERVERS"
    today: date = field(default_factory=date.today)


def gl_fields(snapshot: RegisterSnapshot) -> list[str]:
    return [d.xledger_field for d in snapshot.dimensions if d.xledger_field in GL_OBJECT_FIELDS]


async def gather(
    snapshot: RegisterSnapshot,
    env: Environment,
    reader: SetupReader,
    *,
    source: str,
    judge_roles: bool = False,
    in_force: RegisterSnapshot | None = None,
    recent: list[PaymentStatusEvent] | None = None,
    recent_note: str | None = None,
    today: date | None = None,
) -> Gathered:
    s = snapshot.settings
    g = Gathered(snapshot, source, env.policy, judge_roles=judge_roles, in_force=in_force)
    g.recent = recent
    if recent_note is not None:
        g.recent_note = recent_note
    if today is not None:
        g.today = today
    target = Target(snapshot.tenant_id, s.url, s.token_ref, snapshot.test_tenant)
    if reader.endpoint_override and reader.endpoint_override != s.url:
        g.sent_to = reader.endpoint_override
    try:
        env.secrets().token(s.token_ref)
        g.token_place = env.token_place(s.token_ref)
    except MissingToken:
        g.token_missing = env.token_places(s.token_ref)
        return g
    if not url_allowed(s.url, test_tenant=snapshot.test_tenant, policy=env.policy):
        return g  # nothing is sent: `judge` says why
    projects = any(d.xledger_field == "project" for d in snapshot.dimensions)
    try:
        g.setup = await reader.read(target, gl_fields(snapshot), projects=projects)
    except AuthFailed as exc:
        g.token_refused = str(exc)
    except SetupUnreadable as exc:
        g.unreadable = str(exc)
    return g


async def preflight(
    snapshots: Sequence[RegisterSnapshot],
    env: Environment,
    *,
    source: str,
    in_force: Mapping[str, RegisterSnapshot | None] | None = None,
    recent: Mapping[str, list[PaymentStatusEvent]] | None = None,
    recent_note: str | None = None,
    reader_settings: Mapping[str, Any] | None = None,
    today: date | None = None,
    snapshots_in_force: bool = False,
) -> list[TenantReport]:
    """Every snapshot's checklist, in their order. `in_force` (tenant → the snapshot in
    force, or None for a first one) makes R13 judged as the worker would; `recent`
    (tenant → its Betalt events, newest first) adds the summary of recent payments;
    `snapshots_in_force` says the snapshots are the ones in force (R13 judged already)."""
    async with env.reader(**(reader_settings or {})) as reader:
        # A few tenants at once: each has its own token, so its own pacing gate.
        room = asyncio.Semaphore(4)

        async def one(snap: RegisterSnapshot) -> TenantReport:
            async with room:
                g = await gather(
                    snap,
                    env,
                    reader,
                    source=source,
                    judge_roles=in_force is not None,
                    in_force=(in_force or {}).get(snap.tenant_id),
                    recent=None if recent is None else recent.get(snap.tenant_id, []),
                    recent_note=recent_note,
                    today=today,
                )
            g.is_in_force = snapshots_in_force
            return judge(g)

        return list(await asyncio.gather(*(one(s) for s in snapshots)))


# --- the checklist ------------------------------------------------------------------------


def judge(g: Gathered) -> TenantReport:
    snap = g.snapshot
    checks: list[Check] = []
    add = checks.append
    s = snap.settings
    setup = g.setup

    # Oppsett Xledger: the URL (nothing is sent elsewhere), then the token.
    url_ok = url_allowed(s.url, test_tenant=snap.test_tenant, policy=g.policy)
    if url_ok:
        where = f"; i sandkassemodus går spørringene til {g.sent_to}" if g.sent_to else ""
        add(Check(XLEDGER, "url", Status.OK, f"URL {s.url} er tillatt (R2){where}", xledger=True))
    else:
        add(
            Check(
                XLEDGER,
                "url",
                Status.FAILED,
                f"URL «{s.url}» er ikke tillatt (R2); tokenet er ikke sendt dit",
                "Bruk https://www.xledger.net/graphql eller https://xledger.net/graphql "
                f"under {_SETTINGS_PLACE} (demo.xledger.net bare for en testtjeneste).",
                xledger=True,
            )
        )
    if g.token_missing is not None:
        add(
            Check(
                XLEDGER,
                "token_found",
                Status.FAILED,
                f"Fant ikke tokenet for token_ref {s.token_ref} (lette i {g.token_missing})",
                "Lag et API-token i Xledger med integrasjonsbrukeren (Administrasjon → "
                "Systemtilgang → GraphQL → API-tokens) og legg det i workerens "
                f"hemmelighetslager som ${env_name(s.token_ref)} eller filen "
                f"$XLEDGER_TOKEN_DIR/{s.token_ref}.",
                xledger=True,
            )
        )
    else:
        add(
            Check(
                XLEDGER,
                "token_found",
                Status.OK,
                f"Token for token_ref {s.token_ref} er funnet i {g.token_place}",
                xledger=True,
            )
        )
    blocked = _blocker(g, url_ok)
    if blocked is not None:
        add(_not_checked(XLEDGER, "token_accepted", "Tokenet mot Xledger", blocked))
    elif g.token_refused is not None:
        add(
            Check(
                XLEDGER,
                "token_accepted",
                Status.FAILED,
                "Xledger avviste tokenet",
                "Lag et nytt API-token i Xledger med integrasjonsbrukeren, med lesetilgang og "
                "skrivetilgang, og legg det inn i stedet for det gamle (det kan være slettet, "
                "utløpt eller kopiert feil).",
                xledger=True,
            )
        )
    elif setup is None:
        add(
            Check(
                XLEDGER,
                "token_accepted",
                Status.UNCHECKED,
                f"Kunne ikke lese oppsettet i Xledger: {g.unreadable}",
                "Prøv igjen senere. Svarer Xledger fortsatt ikke, kontakt Xledger Support "
                "(support@xledger.no).",
                xledger=True,
            )
        )
    else:
        add(Check(XLEDGER, "token_accepted", Status.OK, _reached(setup), xledger=True))

    # From here on, a line that needs Xledger's answer and has none: not checked, for this.
    why_not: str | None = None
    if blocked is not None:
        why_not = blocked
    elif g.token_refused is not None:
        why_not = "tokenet ble avvist"
    elif setup is None:
        why_not = "Xledger kunne ikke leses"

    # Oppsett Flyt: Motkonto and Bankkonti-pkey (R3, R4).
    add(_motkonto(s.counter_account, setup, why_not))
    add(_bankkonti_pkey(s.counter_account, s.bank_account_pkey, setup, why_not))

    # Økonomiinnstillinger: the worker's rules, then every code against the entity.
    refusals = _registers(g, checks)
    for dim in sorted(snap.dimensions, key=lambda d: d.position):
        add(_dimension(snap, dim, setup, why_not, g.today))
    add(_vat_codes(snap, setup, why_not))

    # Oppsummering: the recent payments, as the worker and Xledger would take them.
    report = TenantReport(snap.tenant_id, snap.version, g.source, checks)
    report.requests = setup.requests if setup is not None else 0
    add(_recent(g, refusals, why_not, report))
    return report


def _blocker(g: Gathered, url_ok: bool) -> str | None:
    """Why nothing was asked of Xledger, for the lines that needed it."""
    if not url_ok:
        return "URL-en er ikke tillatt"
    if g.token_missing is not None:
        return "tokenet mangler"
    return None


def _reached(setup: EntitySetup) -> str:
    entity = ""
    if setup.entities:
        e = setup.entities[0]
        entity = f" «{e.description}» (dbId {e.db_id})" if e.description else f" {e.db_id}"
    banks = _count(len(setup.bank_accounts), "bankkonto", "bankkonti")
    return (
        f"Xledger godtok tokenet, og det når entiteten{entity}: {len(setup.accounts)} kontoer, "
        f"{len(setup.kinds)} objekttyper, {banks} og {len(setup.currencies)} valutaer lest"
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _all(n: int, one: str, many: str) -> str:
    """`den ene verdien` or `alle 4 verdier`."""
    return f"den ene {one}" if n == 1 else f"alle {n} {many}"


def _not_checked(section: str, key: str, what: str, why: str) -> Check:
    return Check(section, key, Status.SKIPPED, f"{what}: ikke sjekket ({why})", xledger=True)


def _account_problem(setup: EntitySetup, code: str) -> str | None:
    account = setup.accounts.get(code)
    if account is None:
        return "finnes ikke som konto i Xledger"
    if account.posting is False:
        return "finnes i Xledger, men er sperret for postering"
    return None


def _motkonto(code: str, setup: EntitySetup | None, why_not: str | None) -> Check:
    if setup is None:
        return _not_checked(FLYT, "motkonto", f"Motkonto {code}", why_not or "")
    problem = _account_problem(setup, code)
    if problem is None:
        return Check(FLYT, "motkonto", Status.OK, f"Motkonto {code} finnes i Xledger", xledger=True)
    return Check(
        FLYT,
        "motkonto",
        Status.FAILED,
        f"Motkonto {code} {problem}",
        f"Rett Motkonto under {_SETTINGS_PLACE} til kontoen betalingene skal registreres "
        "mot (balansekontoen til bankkontoen betalingene går fra), eller opprett kontoen i "
        "Xledger.",
        xledger=True,
        codes=[f"Motkonto {code}"],
    )


def _bank_name(b: BankAccount) -> str:
    return f"pkey {b.db_id}" + (f" «{b.description}»" if b.description else "")


def _bankkonti_pkey(
    counter: str, pkey: str | None, setup: EntitySetup | None, why_not: str | None
) -> Check:
    key = "bankkonti_pkey"
    if setup is None:
        return _not_checked(FLYT, key, "Bankkonti-pkey", why_not or "")
    counter_known = counter in setup.accounts
    if not pkey:
        if not counter_known:
            return _not_checked(FLYT, key, "Tom Bankkonti-pkey", "Motkonto finnes ikke i Xledger")
        linked = setup.bank_accounts_linked_to(counter)
        if len(linked) <= 1:
            how = f"én bankkonto ({_bank_name(linked[0])})" if linked else "ingen bankkonto"
            return Check(
                FLYT,
                key,
                Status.OK,
                f"Bankkonti-pkey er tom, og Motkonto {counter} er knyttet til {how} i Xledger: "
                "feltet kan være tomt",
                xledger=True,
            )
        return Check(
            FLYT,
            key,
            Status.FAILED,
            f"Bankkonti-pkey er tom, men Motkonto {counter} er knyttet til {len(linked)} "
            f"bankkonti i Xledger ({', '.join(_bank_name(b) for b in linked)})",
            f"Legg inn Bankkonti-pkey for bankkontoen betalingene går fra: finn pkey under "
            f"{_PKEY_PLACE}, og legg den inn i feltet Bankkonti-pkey under {_SETTINGS_PLACE}.",
            xledger=True,
            codes=["Bankkonti-pkey (tom)"],
        )
    todo = (
        f"Finn pkey-en til bankkontoen betalingene går fra under {_PKEY_PLACE}, og legg den "
        f"inn i feltet Bankkonti-pkey under {_SETTINGS_PLACE}."
    )
    bank = setup.bank_accounts.get(int(pkey)) if pkey.isdigit() else None
    if bank is None:
        return Check(
            FLYT,
            key,
            Status.FAILED,
            f"Bankkonti-pkey {pkey} er ikke en bankkonto i Xledger",
            todo,
            xledger=True,
            codes=[f"Bankkonti-pkey {pkey}"],
        )
    linked_to = setup.account_code(bank.account_db_id)
    text = f"Bankkonti-pkey {pkey} er bankkontoen «{bank.description or bank.code}» i Xledger"
    if linked_to is None:
        return Check(FLYT, key, Status.OK, f"{text} (ingen konto knyttet til den)", xledger=True)
    if not counter_known:
        # Motkonto's own line fails; which account it should be is for that fix to settle.
        return Check(
            FLYT,
            key,
            Status.OK,
            f"{text}, knyttet til konto {linked_to} (sammenlignes med Motkonto når den "
            "finnes i Xledger)",
            xledger=True,
        )
    if linked_to != counter:
        return Check(
            FLYT,
            key,
            Status.FAILED,
            f"{text}, men den er knyttet til konto {linked_to}, ikke til Motkonto {counter}",
            "Bruk pkey-en til en bankkonto som er knyttet til Motkonto (finn den under "
            f"{_PKEY_PLACE}), eller rett Motkonto.",
            xledger=True,
            codes=[f"Bankkonti-pkey {pkey}"],
        )
    return Check(FLYT, key, Status.OK, f"{text}, knyttet til Motkonto {counter}", xledger=True)


def _registers(g: Gathered, checks: list[Check]) -> bool:
    """R1, R3–R13 as the worker judges them (R2 has its own line above). True when the
    worker would refuse the registers."""
    snap = g.snapshot
    if g.judge_roles:
        found = check_snapshot(snap, g.in_force, g.policy)
        roles = (
            f" og R13 mot gjeldende versjon {g.in_force.version}"
            if g.in_force
            else " og R13 (første versjon: begge rollene)"
        )
    else:
        found = check_snapshot(snap, None, g.policy, check_roles=False)
        roles = (
            " (gjeldende versjon, godtatt av workeren)"
            if g.is_in_force
            else "; R13 (rollene) dømmes mot gjeldende versjon: bare med broker (--bootstrap)"
        )
    found = [r for r in found if r.rule != "R2"]
    if not found:
        checks.append(
            Check(
                OKONOMI,
                "registers",
                Status.OK,
                f"Innstillingene og registrene følger R1–R12 slik workeren dømmer dem{roles}",
            )
        )
        return False
    for r in found:
        checks.append(
            Check(
                OKONOMI,
                "registers",
                Status.FAILED,
                f"Workeren ville avvise registrene: {refusal_text(r)}",
                "Rett dette i Flyt før registrene publiseres; ellers beholder workeren forrige "
                "gyldige versjon.",
            )
        )
    return True


def _origins(snap: RegisterSnapshot, sources: Iterable[Source]) -> dict[str, list[str]]:
    """Every code the registers in `sources` can give, with where each comes from."""
    r = snap.registers
    out: dict[str, list[str]] = {}

    def put(code: str, where: str) -> None:
        out.setdefault(code, []).append(where)

    names = {u.org_unit_id: u.name for u in r.tilhorighet.units}
    for source in sources:
        register = REGISTER_NAMES[source]
        if source is Source.BETALINGSTYPE:
            for b in r.betalingstype:
                put(b.value, f"{register}: kategori {b.category}")
        elif source is Source.TILHORIGHET:
            for v in r.tilhorighet.values:
                name = names.get(v.org_unit_id)
                put(v.value, f"{register}: enhet {v.org_unit_id}" + (f" «{name}»" if name else ""))
        elif source is Source.TILTAK:
            for t in r.tiltak:
                types, units = ", ".join(t.measure_types), ", ".join(t.org_unit_ids)
                put(t.value, f"{register}: tiltakstype {types} + {units}")
        elif source is Source.BARN:
            for c in r.barn:
                put(c.value, f"{register}: barn {c.child_id}")
        elif source is Source.GRUPPER:
            for gr in r.grupper:
                put(gr.value, f"{register}: gruppe {gr.group_id}")
    return out


def _listed(problems: list[tuple[str, str, list[str]]]) -> str:
    """`code (where…) problem`, joined."""
    return "; ".join(
        f"{code} ({', '.join(sorted(set(where))[:3])}{', …' if len(set(where)) > 3 else ''}) "
        f"{problem}"
        for code, problem, where in problems
    )


def _value_problem(value: ObjectValue | Project | None, today: date) -> str | None:
    """Why Xledger would refuse a dimension value or project: missing, closed to
    postings, or no longer valid (its end date passed)."""
    if value is None:
        return "finnes ikke i Xledger"
    if isinstance(value, ObjectValue):
        open_, until = value.posting, value.date_to
    else:
        open_, until = value.allow_posting, value.to_date
    if open_ is False:
        return "finnes i Xledger, men er sperret for postering"
    if until and until[:10] < today.isoformat():
        return f"gjaldt i Xledger bare til {until[:10]}"
    return None


def _kinds_text(kinds: list[ObjectKind] | None) -> str:
    if kinds is None:
        return "objekttypen er ukjent, så verdiene er søkt i alle objekttyper"
    return ", ".join(f"objekttypen «{k.name}»" for k in kinds)


def _dimension(
    snap: RegisterSnapshot,
    dim: Dimension,
    setup: EntitySetup | None,
    why_not: str | None,
    today: date,
) -> Check:
    key = f"dimension_{dim.position}"
    registers = ", ".join(REGISTER_NAMES[s] for s in dim.sources)
    title = f"Dimensjon {dim.position} ({dim.name} → {dim.xledger_field}, fra {registers})"
    if setup is None:
        return _not_checked(OKONOMI, key, title, why_not or "")
    origins = _origins(snap, dim.sources)
    if dim.xledger_field == "account":
        label, where_to = "konto", "opprett kontoen i Xledger"
        found: dict[str, str | None] = {c: _account_problem(setup, c) for c in origins}
        head = title
    elif dim.xledger_field == "project":
        label, where_to = "prosjekt", "opprett prosjektet i Xledger"
        projects = setup.projects or {}
        found = {c: _value_problem(projects.get(c), today) for c in origins}
        head = title
    else:
        kinds = setup.field_kinds(dim.xledger_field)
        if kinds == []:
            return Check(
                OKONOMI,
                key,
                Status.FAILED,
                f"{title}: Xledger har ingen objekttype satt opp i {dim.xledger_field}",
                f"Velg i registeret Dimensjoner et Xledger-felt som er i bruk i Xledger for "
                f"dimensjon {dim.position}, eller få {dim.xledger_field} satt opp i Xledger.",
                xledger=True,
                codes=[dim.xledger_field],
            )
        label = kinds[0].name if kinds and len(kinds) == 1 else dim.name
        where_to = "opprett verdien i Xledger" + (f" under {_kinds_text(kinds)}" if kinds else "")
        found = {
            c: _value_problem(setup.object_value(dim.xledger_field, c), today) for c in origins
        }
        head = f"{title}, {_kinds_text(kinds)}"
    problems = [(c, p, origins[c]) for c, p in sorted(found.items()) if p is not None]
    if not origins:
        return Check(OKONOMI, key, Status.OK, f"{head}: ingen verdier i registrene å sjekke")
    if not problems:
        return Check(
            OKONOMI,
            key,
            Status.OK,
            f"{head}: {_all(len(origins), 'verdien', 'verdier')} finnes i Xledger",
            xledger=True,
        )
    many = len(problems) > 1
    return Check(
        OKONOMI,
        key,
        Status.FAILED,
        f"{head}: {'verdiene' if many else 'verdien'} {_listed(problems)}",
        f"Rett {'verdiene' if many else 'verdien'} i registeret {registers} "
        f"(Økonomiinnstillinger) til {'verdier' if many else 'en verdi'} som finnes i "
        f"Xledger, eller {where_to}.",
        xledger=True,
        codes=[f"{label} {c}" for c, _, _ in problems],
    )


def _vat_codes(snap: RegisterSnapshot, setup: EntitySetup | None, why_not: str | None) -> Check:
    """R12: every VAT code the registers can give must be one of Xledger's tax rules."""
    mva = snap.registers.mva
    origins: dict[str, list[str]] = {}
    for code in mva.codes:
        origins.setdefault(code, []).append("listen over gyldige koder")
    for c in mva.by_category:
        origins.setdefault(c.code, []).append(f"kategori {c.category}")
    default = snap.settings.default_vat_code
    if default:
        origins.setdefault(default, []).append("standard MVA-kode")
    title = "MVA-kode (R12)"
    if setup is None:
        return _not_checked(OKONOMI, "vat_codes", title, why_not or "")
    codes = setup.tax_codes()
    if codes is None:
        return Check(
            OKONOMI,
            "vat_codes",
            Status.UNCHECKED,
            f"{title}: fant ingen objekttype TAX_RULE i Xledger, så MVA-kodene er ikke sjekket",
            "Kontakt Xledger Support om hvor avgiftskodene ligger, og sjekk MVA-kodene for hånd.",
            xledger=True,
        )
    if not origins:
        return Check(
            OKONOMI,
            "vat_codes",
            Status.OK,
            f"{title}: registrene gir ingen MVA-kode å sjekke (hver betaling må da ha sin egen)",
        )
    problems = [
        (c, "finnes ikke blant avgiftskodene (TAX_RULE) i Xledger", origins[c])
        for c in sorted(origins)
        if c not in codes
    ]
    if not problems:
        return Check(
            OKONOMI,
            "vat_codes",
            Status.OK,
            f"{title}: {_all(len(origins), 'koden', 'koder')} finnes blant avgiftskodene "
            "(TAX_RULE) i Xledger",
            xledger=True,
        )
    return Check(
        OKONOMI,
        "vat_codes",
        Status.FAILED,
        f"{title}: {_listed(problems)}",
        "Bruk MVA-koder som finnes i Xledger (koden for 0 hvis MVA ikke brukes) i registeret "
        "MVA-kode og som standard MVA-kode.",
        xledger=True,
        codes=[f"MVA-kode {c}" for c, _, _ in problems],
    )


def xledger_would_refuse(line: VoucherLine, setup: EntitySetup, today: date) -> list[str]:
    """What of one GL line the entity lacks (its refusal, predicted): e.g. `konto 10899`."""
    out = []
    if _account_problem(setup, line.account):
        out.append(f"konto {line.account}")
    for name in GL_OBJECT_FIELDS:
        code = getattr(line, name)
        if code is not None and _value_problem(setup.object_value(name, code), today):
            out.append(f"{name} {code}")
    projects = setup.projects
    if (
        line.project is not None
        and projects is not None
        and _value_problem(projects.get(line.project), today)
    ):
        out.append(f"prosjekt {line.project}")
    taxes = setup.tax_codes()
    if line.taxRule is not None and taxes is not None and line.taxRule not in taxes:
        out.append(f"MVA-kode {line.taxRule}")
    if setup.currencies and line.currency not in setup.currencies:
        out.append(f"valuta {line.currency}")
    ref = line.bankAccountRef
    if ref is not None and (not ref.isdigit() or int(ref) not in setup.bank_accounts):
        out.append(f"Bankkonti-pkey {ref}")
    return out


def _recent(g: Gathered, refused: bool, why_not: str | None, report: TenantReport) -> Check:
    key, title = "recent", "Siste Betalt-betalinger"
    if g.recent is None:
        return Check(SUMMARY, key, Status.SKIPPED, f"{title}: ikke sjekket ({g.recent_note})")
    if refused:
        return Check(
            SUMMARY,
            key,
            Status.SKIPPED,
            f"{title}: ikke evaluert (workeren ville avvise registrene: rett dem først)",
        )
    if not g.recent:
        return Check(
            SUMMARY, key, Status.OK, f"{title}: ingen for {g.snapshot.tenant_id} på topicen"
        )
    index = RegisterIndex(g.snapshot)
    out = RecentOutcomes()
    for event in g.recent:
        out.evaluated += 1
        result = evaluate(event, index)
        if not isinstance(result, Enriched):
            out.rejected.update({str(result.reason)})
            continue
        lacking = (
            [c for line in result.lines for c in xledger_would_refuse(line, g.setup, g.today)]
            if g.setup is not None
            else []
        )
        if lacking:
            out.refused_payments += 1
            out.refused.update(set(lacking))
        else:
            out.would_post += 1
    report.recent = out
    n_rejected = sum(out.rejected.values())
    parts = [f"{out.would_post} ville bli postert"]
    if n_rejected:
        codes = ", ".join(f"{c} {n}" for c, n in out.rejected.most_common())
        parts.append(f"{n_rejected} avvist av workeren ({codes})")
    if out.refused_payments:
        codes = ", ".join(f"{c} {n}" for c, n in out.refused.most_common())
        parts.append(f"{out.refused_payments} avvist av Xledger ({codes})")
    xledger_note = "" if g.setup is not None else f"; mot Xledger: ikke sjekket ({why_not})"
    text = f"{title}: av de siste {out.evaluated}: " + ", ".join(parts) + xledger_note
    if n_rejected or out.refused_payments:
        return Check(
            SUMMARY,
            key,
            Status.FAILED,
            text,
            "Se hver betaling med `worker whatif --snapshot …` (hvorfor den ville bli avvist, "
            "og hva den ville fått), og rett registrene.",
            xledger=bool(out.refused_payments),
        )
    return Check(SUMMARY, key, Status.OK, text)
