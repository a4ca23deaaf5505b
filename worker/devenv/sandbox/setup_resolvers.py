"""The sandbox's answers to Xledger's setup reads: accounts, object kinds and values (VAT
codes as the values of the kind TAX_RULE), projects, the entity's bank accounts with the GL
account each is linked to, currencies, and the entity with its glSetupEntries.

Everything is made from the requesting token's `Entity` at each request, so a test that
changes the entity sees the change at once. Records come in dbId order and a cursor is a
record's dbId (xledger.md: "a cursor is in most cases the record's dbId"). `objectStatus`
and `ownerSet` are accepted and change nothing: every record here is open and the entity's
own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from graphql import GraphQLError, GraphQLResolveInfo, GraphQLSchema

from worker.devenv.sandbox.entities import Entity

MAX_FIRST = 10_000  # at most 10 000 records per query
# The dbId one public integration hard-codes for the TAX_RULE kind; the client finds the
# kind by its name, so nothing depends on this number.
TAX_RULE_KIND_DB_ID = 14
TAX_RULE = "TAX_RULE"
# An entity made without a setup (tests' hand-made entities) shows its gl_objects as one
# kind, set up in no field.
UNASSIGNED_KIND = "GL_OBJECTS"
_FIRST_KIND_DB_ID = 1_001
_ACCOUNT_DB_ID = 3_000_001
_PROJECT_DB_ID = 4_000_001
_CURRENCY_DB_ID = 6_000_001
_VALUE_DB_ID_STEP = 10_000  # a kind's values: kind dbId × this + their index

Record = dict[str, Any]


class _WithEntity(Protocol):
    """The request's context (resolvers.Context): the entity the token belongs to."""

    entity: Entity


def attach_setup_resolvers(schema: GraphQLSchema) -> None:
    """Give the setup root fields of the SDL their resolvers."""
    assert schema.query_type is not None
    fields = schema.query_type.fields
    for name, records in _ROOTS.items():
        fields[name].resolve = _list_resolver(records)


# --- the entity's records ---------------------------------------------------------------


def _account_ids(e: Entity) -> dict[str, int]:
    codes = sorted(e.accounts | set(e.bank_account_links.values()))
    return {code: _ACCOUNT_DB_ID + i for i, code in enumerate(codes)}


def _accounts(e: Entity) -> list[Record]:
    return [
        {"dbId": db_id, "code": code, "description": f"Konto {code}", "posting": True}
        for code, db_id in _account_ids(e).items()
    ]


def _kinds(e: Entity) -> dict[str, tuple[int, set[str]]]:
    """Kind name → (dbId, value codes), TAX_RULE included."""
    by_name: dict[str, set[str]] = {}
    for kind in e.dimension_kinds.values():
        by_name.setdefault(kind.name, set()).update(kind.values)
    if not e.dimension_kinds and e.gl_objects:
        by_name[UNASSIGNED_KIND] = set(e.gl_objects)
    out = {TAX_RULE: (TAX_RULE_KIND_DB_ID, set(e.tax_rules))}
    for i, name in enumerate(sorted(by_name)):
        out[name] = (_FIRST_KIND_DB_ID + i, by_name[name])
    return out


def _kind_ref(db_id: int, name: str) -> Record:
    return {"dbId": db_id, "name": name}


def _object_kinds(e: Entity) -> list[Record]:
    return [_kind_ref(db_id, name) for name, (db_id, _) in _kinds(e).items()]


def _object_values(e: Entity) -> list[Record]:
    out = []
    for name, (kind_id, codes) in _kinds(e).items():
        for i, code in enumerate(sorted(codes)):
            out.append(
                {
                    "dbId": kind_id * _VALUE_DB_ID_STEP + i,
                    "code": code,
                    "description": f"{name} {code}",
                    "posting": True,
                    "dateFrom": None,
                    "dateTo": None,
                    "objectKind": _kind_ref(kind_id, name),
                    "objectKindDbId": kind_id,  # for the filter; not a field of the type
                }
            )
    return out


def _projects(e: Entity) -> list[Record]:
    return [
        {
            "dbId": _PROJECT_DB_ID + i,
            "code": code,
            "description": f"Prosjekt {code}",
            "allowPosting": True,
            "fromDate": None,
            "toDate": None,
        }
        for i, code in enumerate(sorted(e.projects))
    ]


def _currency_ids(e: Entity) -> dict[str, int]:
    return {code: _CURRENCY_DB_ID + i for i, code in enumerate(sorted(e.currencies))}


def _bank_accounts(e: Entity) -> list[Record]:
    accounts, currencies = _account_ids(e), _currency_ids(e)
    nok = {"dbId": currencies["NOK"], "code": "NOK"} if "NOK" in currencies else None
    out = []
    for n, db_id in enumerate(sorted(e.bank_account_ids()), start=1):
        linked = e.bank_account_links.get(db_id)
        out.append(
            {
                "dbId": db_id,
                "code": f"BANK{n}",
                "description": "Driftskonto" if n == 1 else f"Bankkonto {n}",
                "accountNumber": f"1503.{n:02d}.{db_id % 100_000:05d}",
                "iban": None,
                "account": None if linked is None else {"dbId": accounts[linked], "code": linked},
                "currency": nok,
            }
        )
    return out


def _currencies(e: Entity) -> list[Record]:
    return [
        {"dbId": db_id, "code": code, "description": code}
        for code, db_id in _currency_ids(e).items()
    ]


def _entities(e: Entity) -> list[Record]:
    kinds = _kinds(e)
    entries = [
        {
            "field": {"name": field},
            "fieldObject": {"objectKind": _kind_ref(kinds[kind.name][0], kind.name)},
        }
        for field, kind in sorted(e.dimension_kinds.items())
    ]
    return [
        {
            "dbId": e.owner_db_id,
            "code": e.name,
            "description": e.name,
            "ownerDbId": e.owner_db_id,
            "glSetupEntries": entries,
        }
    ]


_ROOTS: dict[str, Callable[[Entity], list[Record]]] = {
    "accounts": _accounts,
    "objectKinds": _object_kinds,
    "objectValues": _object_values,
    "projects": _projects,
    "entityBankAccounts": _bank_accounts,
    "currencies": _currencies,
    "entities": _entities,
}


# --- filters and connections ------------------------------------------------------------


def _matches(record: Record, f: dict[str, Any]) -> bool:
    """`x: v` is equality, `x_in: [..]` membership; a filter field given as null filters
    nothing (as for glImportItems)."""
    for key, wanted in f.items():
        if wanted is None:
            continue
        if key.endswith("_in"):
            if record.get(key.removesuffix("_in")) not in wanted:
                return False
        elif record.get(key) != wanted:
            return False
    return True


def _bad_request(message: str, info: GraphQLResolveInfo) -> GraphQLError:
    return GraphQLError(
        message, info.field_nodes, path=info.path.as_list(), extensions={"code": "BAD_REQUEST"}
    )


def _list_resolver(records: Callable[[Entity], list[Record]]) -> Callable[..., Record]:
    def resolve(
        _root: Any,
        info: GraphQLResolveInfo,
        first: int | None = None,
        last: int | None = None,
        after: str | None = None,
        before: str | None = None,
        filter: dict[str, Any] | None = None,  # the GraphQL argument's name
        **_ignored: Any,  # objectStatus, ownerSet
    ) -> Record:
        ctx: _WithEntity = info.context
        chosen = [r for r in records(ctx.entity) if _matches(r, filter or {})]
        chosen.sort(key=lambda r: int(r["dbId"]))
        return connection(chosen, info, first, last, after, before)

    return resolve


def _cursor(value: str | None, name: str, info: GraphQLResolveInfo) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise _bad_request(f"{name}: Invalid cursor.", info) from None


def connection(
    items: Iterable[Record],
    info: GraphQLResolveInfo,
    first: int | None,
    last: int | None,
    after: str | None,
    before: str | None,
) -> Record:
    """A Relay connection over records in dbId order, cursors being dbIds; `edges: null`
    when nothing matches, as Xledger answers."""
    for name, count in (("first", first), ("last", last)):
        if count is not None and not 0 <= count <= MAX_FIRST:
            raise _bad_request(f"{name}: At most {MAX_FIRST} records per query.", info)
    rows = list(items)
    after_id, before_id = _cursor(after, "after", info), _cursor(before, "before", info)
    has_previous = has_next = False
    if after_id is not None:
        has_previous = any(r["dbId"] <= after_id for r in rows)
        rows = [r for r in rows if r["dbId"] > after_id]
    if before_id is not None:
        has_next = any(r["dbId"] >= before_id for r in rows)
        rows = [r for r in rows if r["dbId"] < before_id]
    if first is None and last is None:
        first = MAX_FIRST
    if first is not None and len(rows) > first:
        rows, has_next = rows[:first], True
    if last is not None and len(rows) > last:
        rows, has_previous = rows[len(rows) - last :], True
    edges = [{"cursor": str(r["dbId"]), "node": r} for r in rows]
    return {
        "edges": edges or None,
        "pageInfo": {"hasNextPage": has_next, "hasPreviousPage": has_previous},
    }
