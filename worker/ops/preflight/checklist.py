"""The checklist, in the onboarding guide's order: Oppsett Xledger (the URL, the token),
Oppsett Flyt (Motkonto, Bankkonti-pkey), Økonomiinnstillinger and the summary
(`register_checks.py`); and `preflight`, which gathers and judges every snapshot. `judge` is
pure: the checklist from what was gathered."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from worker.contracts import PaymentStatusEvent, RegisterSnapshot
from worker.core.endpoints import url_allowed
from worker.ops.preflight.gather import Environment, Gathered, gather
from worker.ops.preflight.register_checks import (
    account_problem,
    dimension_check,
    recent_check,
    registers_check,
    vat_codes_check,
)
from worker.ops.preflight.report import (
    FLYT,
    XLEDGER,
    Check,
    Status,
    TenantReport,
    count_of,
    not_checked,
)
from worker.xledger.entity_setup import BankAccount, EntitySetup
from worker.xledger.secrets import env_name

_SETTINGS_PLACE = "Administrasjon → Innstillinger → Økonomiinnstillinger (Regnskapssystem)"
_PKEY_PLACE = "Bank → Bankkonti → Bankkonti i Xledger (debug-visning)"


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
        add(not_checked(XLEDGER, "token_accepted", "Tokenet mot Xledger", blocked))
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
    refusals = registers_check(g, checks)
    for dim in sorted(snap.dimensions, key=lambda d: d.position):
        add(dimension_check(snap, dim, setup, why_not, g.today))
    add(vat_codes_check(snap, setup, why_not))

    # Oppsummering: the recent payments, as the worker and Xledger would take them.
    report = TenantReport(snap.tenant_id, snap.version, g.source, checks)
    report.requests = setup.requests if setup is not None else 0
    add(recent_check(g, refusals, why_not, report))
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
    banks = count_of(len(setup.bank_accounts), "bankkonto", "bankkonti")
    return (
        f"Xledger godtok tokenet, og det når entiteten{entity}: {len(setup.accounts)} kontoer, "
        f"{len(setup.kinds)} objekttyper, {banks} og {len(setup.currencies)} valutaer lest"
    )


def _motkonto(code: str, setup: EntitySetup | None, why_not: str | None) -> Check:
    if setup is None:
        return not_checked(FLYT, "motkonto", f"Motkonto {code}", why_not or "")
    problem = account_problem(setup, code)
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
        return not_checked(FLYT, key, "Bankkonti-pkey", why_not or "")
    counter_known = counter in setup.accounts
    if not pkey:
        if not counter_known:
            return not_checked(FLYT, key, "Tom Bankkonti-pkey", "Motkonto finnes ikke i Xledger")
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
