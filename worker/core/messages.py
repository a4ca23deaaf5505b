"""R15: the Norwegian problem texts shown in the Økonomi tab, one builder per problem code.

Each text says what is wrong and where to fix it; the payment id is on the row already.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.contracts.rejection import Problem, ProblemCode

_NOT_SENT = "Betalingen er ikke overført."


def _problem(code: ProblemCode, position: int | None, message: str) -> Problem:
    # model_construct: the core builds these from known-good values, on the hot path.
    return Problem.model_construct(code=code, position=position, message=message)


def unknown_tenant(tenant_id: str) -> Problem:
    return _problem(
        ProblemCode.UNKNOWN_TENANT,
        None,
        f"Tjenesten {tenant_id} har ikke et gyldig oppsett for Xledger (økonomiinnstillinger og "
        f"registre). {_NOT_SENT}",
    )


def missing_account(category: str) -> Problem:
    return _problem(
        ProblemCode.MISSING_ACCOUNT,
        1,
        f"Betalingskategorien {category} har ingen konto i registeret Betalingstyper. {_NOT_SENT}",
    )


def unknown_org_unit(position: int, name: str, org_unit_id: str) -> Problem:
    return _problem(
        ProblemCode.UNKNOWN_ORG_UNIT,
        position,
        f"Dimensjon {position} ({name}): tilhørigheten {org_unit_id} finnes ikke i "
        f"organisasjonsstrukturen i registeret Tilhørighet. {_NOT_SENT}",
    )


_SOURCE_NAMES = {
    "betalingstype": "Betalingstype",
    "tilhorighet": "Tilhørighet",
    "tiltak": "Tiltak",
    "barn": "Barn",
    "grupper": "Grupper",
}


def missing_dimension_value(position: int, name: str, sources: Iterable[str]) -> Problem:
    registers = ", ".join(_SOURCE_NAMES.get(s, s) for s in sources)
    return _problem(
        ProblemCode.MISSING_DIMENSION_VALUE,
        position,
        f"Dimensjon {position} ({name}) er påkrevd, men ingen verdi ble funnet i "
        f"registeret {registers} for denne betalingen. {_NOT_SENT}",
    )


def ambiguous_tiltak(
    position: int, name: str, measure_type: str, org_unit_id: str, values: Iterable[str]
) -> Problem:
    return _problem(
        ProblemCode.AMBIGUOUS_REGISTER,
        position,
        f"Dimensjon {position} ({name}): registeret Tiltak gir flere verdier "
        f"({', '.join(values)}) for tiltakstype {measure_type} og tilhørighet {org_unit_id}. "
        f"{_NOT_SENT}",
    )


def group_conflict(position: int, group_ids: Iterable[str]) -> Problem:
    return _problem(
        ProblemCode.GROUP_CONFLICT,
        position,
        f"Barnet er med i flere grupper som har verdi ({', '.join(group_ids)}). {_NOT_SENT}",
    )


def missing_vat_code(category: str) -> Problem:
    return _problem(
        ProblemCode.MISSING_VAT_CODE,
        None,
        f"Betalingen mangler MVA-kode, og verken registeret MVA-kode (kategori {category}) eller "
        f"standard MVA-kode gir en. Bruk koden for 0 hvis MVA ikke brukes. {_NOT_SENT}",
    )


def unknown_vat_code(code: str) -> Problem:
    return _problem(
        ProblemCode.UNKNOWN_VAT_CODE,
        None,
        f"MVA-koden {code} er ikke blant de gyldige MVA-kodene i registeret MVA-kode. {_NOT_SENT}",
    )


def xledger_refused(message: str) -> Problem:
    return _problem(
        ProblemCode.XLEDGER_REFUSED,
        None,
        f"Xledger avviste posteringen: {message} {_NOT_SENT}",
    )
