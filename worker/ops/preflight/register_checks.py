"""Økonomiinnstillinger and the recent payments: the registers judged by the worker's own
rules (`check_snapshot`, as publish-registers and the register cache), every code a
dimension's registers can give and every VAT code against the entity, and the tenant's
recent Betalt payments evaluated by the core's own `evaluate`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from worker.contracts import RegisterSnapshot
from worker.contracts.register_snapshot import Dimension, Source
from worker.contracts.submission import GL_OBJECT_FIELDS
from worker.core import Enriched, RegisterIndex, check_snapshot, evaluate
from worker.core.posting import VoucherLine
from worker.core.snapshot_record import refusal_text
from worker.ops.preflight.gather import Gathered
from worker.ops.preflight.report import (
    OKONOMI,
    SUMMARY,
    Check,
    RecentOutcomes,
    Status,
    TenantReport,
    all_of,
    not_checked,
)
from worker.xledger.entity_setup import (
    EntitySetup,
    ObjectKind,
    ObjectValue,
    Project,
)

REGISTER_NAMES = {
    Source.BETALINGSTYPE: "Betalingstyper",
    Source.TILHORIGHET: "Tilhørighet",
    Source.TILTAK: "Tiltak",
    Source.BARN: "Barn",
    Source.GRUPPER: "Grupper",
}


def account_problem(setup: EntitySetup, code: str) -> str | None:
    account = setup.accounts.get(code)
    if account is None:
        return "finnes ikke som konto i Xledger"
    if account.posting is False:
        return "finnes i Xledger, men er sperret for postering"
    return None


def value_problem(value: ObjectValue | Project | None, today: date) -> str | None:
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


def registers_check(g: Gathered, checks: list[Check]) -> bool:
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


def _kinds_text(kinds: list[ObjectKind] | None) -> str:
    if kinds is None:
        return "objekttypen er ukjent, så verdiene er søkt i alle objekttyper"
    return ", ".join(f"objekttypen «{k.name}»" for k in kinds)


def dimension_check(
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
        return not_checked(OKONOMI, key, title, why_not or "")
    origins = _origins(snap, dim.sources)
    if dim.xledger_field == "account":
        label, where_to = "konto", "opprett kontoen i Xledger"
        found: dict[str, str | None] = {c: account_problem(setup, c) for c in origins}
        head = title
    elif dim.xledger_field == "project":
        label, where_to = "prosjekt", "opprett prosjektet i Xledger"
        projects = setup.projects or {}
        found = {c: value_problem(projects.get(c), today) for c in origins}
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
        found = {c: value_problem(setup.object_value(dim.xledger_field, c), today) for c in origins}
        head = f"{title}, {_kinds_text(kinds)}"
    problems = [(c, p, origins[c]) for c, p in sorted(found.items()) if p is not None]
    if not origins:
        return Check(OKONOMI, key, Status.OK, f"{head}: ingen verdier i registrene å sjekke")
    if not problems:
        return Check(
            OKONOMI,
            key,
            Status.OK,
            f"{head}: {all_of(len(origins), 'verdien', 'verdier')} finnes i Xledger",
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


def vat_codes_check(
    snap: RegisterSnapshot, setup: EntitySetup | None, why_not: str | None
) -> Check:
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
        return not_checked(OKONOMI, "vat_codes", title, why_not or "")
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
            f"{title}: {all_of(len(origins), 'koden', 'koder')} finnes blant avgiftskodene "
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
    if account_problem(setup, line.account):
        out.append(f"konto {line.account}")
    for name in GL_OBJECT_FIELDS:
        code = getattr(line, name)
        if code is not None and value_problem(setup.object_value(name, code), today):
            out.append(f"{name} {code}")
    projects = setup.projects
    if (
        line.project is not None
        and projects is not None
        and value_problem(projects.get(line.project), today)
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


def recent_check(g: Gathered, refused: bool, why_not: str | None, report: TenantReport) -> Check:
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
