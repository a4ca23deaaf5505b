"""A local stand-in for Xledger's GraphQL API, faithful to ../shared/xledger.md.

It serves `POST /graphql` with Xledger's auth header, burst/concurrency/credit limits and
error shapes, validates every request against `schema.graphql` with graphql-core, keeps
an in-memory GL ledger per entity, and injects faults (5xx, dropped connections, slow
answers, commit-then-fail, spurious burst errors) so the client's retries and idempotency
can be tested. Tokens live only in memory, as dictionary keys: no message or log shows one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from graphql import (
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    OperationType,
    ValueNode,
    build_schema,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)
from graphql.language import FloatValueNode, IntValueNode, StringValueNode

from worker.contracts.register_snapshot import RegisterSnapshot, Source

__all__ = [
    "PROFILES",
    "Entity",
    "FaultProfile",
    "SandboxStats",
    "XledgerSandbox",
    "entity_from_snapshot",
    "serve",
]

MAX_INPUTS = 500  # help centre 8715787519634: a mass mutation takes at most 500 nodes
MAX_FIRST = 10_000  # at most 10 000 records per query
CREDITS_RESET_S = 20 * 60  # Xledger's own sample waits 20 min on INSUFFICIENT_CREDITS
FIRST_DB_ID = 1_000_001
DEFAULT_CURRENCIES = frozenset({"NOK", "SEK", "DKK", "EUR", "USD"})

BAD_TOKEN_FORMAT = 'Bad format for API Token. Expected header: "Authorization: token <your-token>"'
_TOKEN_HEADER = re.compile(r"token +(\S+)", re.IGNORECASE)
_CENT = Decimal("0.01")
_DECIMAL_TEXT = re.compile(r"-?\d+(\.\d+)?")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")


# --- entities -------------------------------------------------------------------------


@dataclass
class Entity:
    """One Xledger entity (a tenant's company) and the codes it knows."""

    name: str
    owner_db_id: int
    accounts: set[str]
    gl_objects: set[str]
    projects: set[str]
    tax_rules: set[str]
    bank_accounts: set[int]
    currencies: set[str] = field(default_factory=lambda: set(DEFAULT_CURRENCIES))
    credits: int | None = None  # None: unlimited; each admitted request costs 1


def entity_from_snapshot(snapshot: RegisterSnapshot, owner_db_id: int) -> Entity:
    """An entity knowing every code the tenant's registers can produce."""
    reg = snapshot.registers
    by_source: dict[Source, set[str]] = {
        Source.BETALINGSTYPE: {e.value for e in reg.betalingstype},
        Source.TILHORIGHET: {v.value for v in reg.tilhorighet.values},
        Source.TILTAK: {t.value for t in reg.tiltak},
        Source.BARN: {b.value for b in reg.barn},
        Source.GRUPPER: {g.value for g in reg.grupper},
    }
    dimension_values: set[str] = set()
    for source, values in by_source.items():
        if source is not Source.BETALINGSTYPE:
            dimension_values |= values
    accounts = by_source[Source.BETALINGSTYPE] | {snapshot.settings.counter_account}
    gl_objects = set(dimension_values)
    projects = set(dimension_values)
    # Any source may feed any field, so each dimension's codes also go to its own field.
    for dim in snapshot.dimensions:
        codes = set().union(*(by_source[s] for s in dim.sources))
        if dim.xledger_field == "account":
            accounts |= codes
        elif dim.xledger_field == "project":
            projects |= codes
        else:
            gl_objects |= codes
    tax_rules = set(reg.mva.codes) | {c.code for c in reg.mva.by_category}
    if snapshot.settings.default_vat_code:
        tax_rules.add(snapshot.settings.default_vat_code)
    pkey = snapshot.settings.bank_account_pkey
    bank_accounts = {int(pkey)} if pkey and pkey.isdigit() else set()
    return Entity(
        name=snapshot.tenant_id,
        owner_db_id=owner_db_id,
        accounts=accounts,
        gl_objects=gl_objects,
        projects=projects,
        tax_rules=tax_rules,
        bank_accounts=bank_accounts,
    )


# --- faults and stats -----------------------------------------------------------------


@dataclass(frozen=True)
class FaultProfile:
    """Probabilities (0..1) of each fault, drawn per request."""

    error_5xx: float = 0.0  # HTTP 502/503, plain text, nothing done
    drop: float = 0.0  # connection closed without an answer, nothing done
    slow: float = 0.0  # the correct answer, slow_seconds late
    slow_seconds: float = 1.0
    commit_then_fail: float = 0.0  # mutations: stored, then HTTP 500, a drop, or a hang+drop
    hang_seconds: float = 5.0
    burst_error: float = 0.0  # a spurious burst-limit error, nothing done


PROFILES: dict[str, FaultProfile] = {
    "none": FaultProfile(),
    "5xx": FaultProfile(error_5xx=0.2),
    "drop": FaultProfile(drop=0.2),
    "slow": FaultProfile(slow=0.5),
    "commit-then-fail": FaultProfile(commit_then_fail=0.2),
    "burst": FaultProfile(burst_error=0.2),
    "mixed": FaultProfile(error_5xx=0.10, commit_then_fail=0.05, burst_error=0.05),
}


@dataclass
class SandboxStats:
    """Counters. Entities are keyed by name, never by token."""

    requests: int = 0  # every POST to /graphql
    queries: int = 0
    mutations: int = 0
    accepted_batches: int = 0
    accepted_lines: int = 0
    rejected_validation: int = 0  # requests answered with GraphQL errors, nothing stored
    burst_errors_sent: int = 0  # the real sliding-window limit
    spurious_burst_errors_sent: int = 0
    concurrency_errors_sent: int = 0
    credit_errors_sent: int = 0
    auth_failures: int = 0
    # "5xx", "drop", "slow", "burst", "commit-then-fail:500|drop|hang"
    faults: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    request_times: dict[str, list[float]] = field(default_factory=dict)

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1


# --- scalars --------------------------------------------------------------------------


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
        if value.is_finite() and value == value.quantize(_CENT):
            return value.quantize(_CENT)
    except InvalidOperation:
        pass
    raise GraphQLError(f"Decimal must be a finite number with at most 2 decimals: {text!r}.")


def _parse_decimal(value: Any) -> Decimal:
    # bool is an int in Python; a boolean amount is a type error, as in any GraphQL server.
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise GraphQLError(f"Decimal cannot represent a non-numeric value: {value!r}.")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise GraphQLError(f"Decimal cannot represent {value!r}: expected a decimal string.")
    # repr of a float is its shortest exact-looking form: 0.1 + 0.2 is refused, not rounded.
    return _decimal(repr(value) if isinstance(value, float) else str(value))


def _parse_decimal_literal(node: ValueNode, _variables: Any = None) -> Decimal:
    if isinstance(node, StringValueNode):
        return _parse_decimal(node.value)
    if isinstance(node, IntValueNode | FloatValueNode):
        return _decimal(node.value)
    raise GraphQLError("Decimal must be a string or a number.", node)


def _serialize_decimal(value: Any) -> str:
    return f"{_parse_decimal(value):.2f}"


def _parse_date(value: Any) -> date:
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(value)
    raise GraphQLError(f"Date must be an ISO date YYYY-MM-DD: {value!r}.")


def _parse_date_literal(node: ValueNode, _variables: Any = None) -> date:
    if isinstance(node, StringValueNode):
        return _parse_date(node.value)
    raise GraphQLError("Date must be a string YYYY-MM-DD.", node)


def _serialize_date(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else _parse_date(value).isoformat()


_SCALAR_CODECS = (
    "serialize",
    "parse_value",
    "parse_literal",
    "coerce_output_value",
    "coerce_input_value",
    "coerce_input_literal",
    "value_to_literal",
)


def _implement(schema: GraphQLSchema, name: str, serialize: Any, value: Any, literal: Any) -> None:
    """Give an SDL scalar its rules, under graphql-core 3.2 and 3.3 alike.

    build_schema makes pass-through scalars; 3.3 renamed the hooks (coerce_*), so the
    constructor of a template scalar decides which attributes to set, and we copy them.
    """
    scalar = schema.type_map[name]
    assert isinstance(scalar, GraphQLScalarType)
    template = GraphQLScalarType(
        name, serialize=serialize, parse_value=value, parse_literal=literal
    )
    for attr in _SCALAR_CODECS:
        if attr in vars(template):
            setattr(scalar, attr, vars(template)[attr])


@cache
def _schema() -> GraphQLSchema:
    """Our SDL with the scalars and resolvers attached; built once, shared by sandboxes."""
    sdl = resources.files("worker.xledger").joinpath("schema.graphql").read_text("utf-8")
    schema = build_schema(sdl)
    _implement(schema, "Decimal", _serialize_decimal, _parse_decimal, _parse_decimal_literal)
    _implement(schema, "Date", _serialize_date, _parse_date, _parse_date_literal)
    assert schema.query_type is not None and schema.mutation_type is not None
    schema.query_type.fields["glImportItems"].resolve = _resolve_gl_import_items
    schema.mutation_type.fields["addGLImportItems"].resolve = _resolve_add_gl_import_items
    return schema


# --- the store and the resolvers ------------------------------------------------------


@dataclass
class _Line:
    tenant: str
    db_id: int
    batch: int
    node: dict[str, Any]  # the coerced input node: Decimals, dates, ref dicts
    created_at: str


@dataclass
class _Context:
    sandbox: XledgerSandbox
    entity: Entity
    errors: list[GraphQLError] = field(default_factory=list)  # extra, one per problem
    batches: list[int] = field(default_factory=list)


_REQUIRED = ("account", "amount", "postedDate", "trRegNumber")
_GL_OBJECTS = ("glObject1", "glObject2", "glObject3", "glObject4", "glObject5")


def _ref_code(ref: Any) -> Any:
    if not isinstance(ref, dict):
        return ref
    return ref.get("code") if ref.get("code") is not None else ref.get("dbId")


def _gql_node(line: _Line) -> dict[str, Any]:
    n = line.node

    def ref(name: str) -> dict[str, Any] | None:
        value = n.get(name)
        return None if value is None else {"code": value.get("code"), "dbId": value.get("dbId")}

    return {
        "dbId": line.db_id,
        "extIdentifier": n.get("extIdentifier"),
        "trRegNumber": n.get("trRegNumber"),
        "postedDate": n.get("postedDate"),
        "amount": n.get("amount"),
        "text": n.get("text"),
        "account": ref("account"),
        "currency": ref("currency"),
        "taxRule": ref("taxRule"),
        "createdAt": line.created_at,
    }


def _check_ref(
    entity: Entity, name: str, ref: dict[str, Any], codes: Iterable[str], db_ids: Iterable[int]
) -> list[tuple[str, dict[str, Any]]]:
    """Xledger-style problems with one reference field, e.g. `account.code: No value …`."""
    code, db_id = ref.get("code"), ref.get("dbId")
    extra: dict[str, Any] = {}
    if ref.get("showAlternatives") == "YES":
        valid = [{"code": c} for c in sorted(codes)] + [{"dbId": d} for d in sorted(db_ids)]
        extra["exampleValidInputs"] = valid[:20]
    owner = entity.owner_db_id
    if code is None and db_id is None:
        return [(f"{name}: A code or a dbId is required.", extra)]
    problems = []
    if code is not None and code not in set(codes):
        problems.append((f"{name}.code: No value matching owner {owner}, code '{code}'.", extra))
    if db_id is not None and db_id not in set(db_ids):
        problems.append((f"{name}.dbId: No value matching owner {owner}, dbId {db_id}.", extra))
    return problems


def _node_problems(entity: Entity, node: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    problems: list[tuple[str, dict[str, Any]]] = [
        (f"{name}: Field is required.", {}) for name in _REQUIRED if node.get(name) is None
    ]
    # Codes we model; dbIds are known only for bank accounts (the Bankkonti-pkey).
    checks: list[tuple[str, set[str], set[int]]] = [
        ("account", entity.accounts, set()),
        *((name, entity.gl_objects, set()) for name in _GL_OBJECTS),
        ("project", entity.projects, set()),
        ("taxRule", entity.tax_rules, set()),
        ("currency", entity.currencies, set()),
        ("bankAccountRef", set(), entity.bank_accounts),
    ]
    for name, codes, db_ids in checks:
        ref = node.get(name)
        if ref is not None:
            problems += _check_ref(entity, name, ref, codes, db_ids)
    return problems


def _resolve_add_gl_import_items(
    _root: Any, info: GraphQLResolveInfo, inputs: list[dict[str, Any]]
) -> dict[str, Any] | None:
    ctx: _Context = info.context
    path = info.path.as_list()
    if len(inputs) > MAX_INPUTS:
        raise GraphQLError(
            f"Too many inputs ({len(inputs)}): a mutation takes at most {MAX_INPUTS}.",
            info.field_nodes,
            path=path,
            extensions={"code": "BAD_REQUEST"},
        )
    if not inputs:
        return {"edges": None}  # nothing to store: no batch
    problems = [p for item in inputs for p in _node_problems(ctx.entity, item["node"])]
    # Lines sharing a trRegNumber form one voucher, which must balance.
    sums: dict[int, Decimal] = {}
    for item in inputs:
        node = item["node"]
        if node.get("trRegNumber") is not None and node.get("amount") is not None:
            tr = node["trRegNumber"]
            sums[tr] = sums.get(tr, Decimal(0)) + node["amount"]
    problems += [
        (f"Voucher {tr} does not balance (sum {total:.2f}).", {})
        for tr, total in sums.items()
        if total != 0
    ]
    if problems:
        # Atomic: nothing is stored, one error per problem.
        for message, extra in problems:
            ext = {"code": "INVALID_VALUE", **extra}
            ctx.errors.append(GraphQLError(message, info.field_nodes, path=path, extensions=ext))
        return None
    lines = ctx.sandbox._store(ctx.entity, [item["node"] for item in inputs])
    ctx.batches.append(lines[0].batch)
    edges = [
        {"clientId": item.get("clientId"), "node": _gql_node(line)}
        for item, line in zip(inputs, lines, strict=True)
    ]
    return {"edges": edges}


def _cursor(value: str | None, name: str, info: GraphQLResolveInfo) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise GraphQLError(
            f"{name}: Invalid cursor.",
            info.field_nodes,
            path=info.path.as_list(),
            extensions={"code": "BAD_REQUEST"},
        ) from None


def _matches(line: _Line, f: dict[str, Any]) -> bool:
    n = line.node
    posted = n["postedDate"].isoformat()
    checks = (
        ("dbId", lambda v: line.db_id == v),
        ("dbId_in", lambda v: line.db_id in v),
        ("extIdentifier", lambda v: n.get("extIdentifier") == v),
        ("extIdentifier_in", lambda v: n.get("extIdentifier") in v),
        ("trRegNumber", lambda v: n.get("trRegNumber") == v),
        ("postedDate_gte", lambda v: posted >= v),
        ("postedDate_lte", lambda v: posted <= v),
    )
    # A filter field given as null filters nothing.
    return all(f.get(key) is None or test(f[key]) for key, test in checks)


def _resolve_gl_import_items(
    _root: Any,
    info: GraphQLResolveInfo,
    first: int | None = None,
    last: int | None = None,
    after: str | None = None,
    before: str | None = None,
    filter: dict[str, Any] | None = None,  # the GraphQL argument's name
) -> dict[str, Any]:
    ctx: _Context = info.context
    for name, count in (("first", first), ("last", last)):
        if count is not None and not 0 <= count <= MAX_FIRST:
            raise GraphQLError(
                f"{name}: At most {MAX_FIRST} records per query.",
                info.field_nodes,
                path=info.path.as_list(),
                extensions={"code": "BAD_REQUEST"},
            )
    after_id, before_id = _cursor(after, "after", info), _cursor(before, "before", info)
    items = [
        line
        for line in ctx.sandbox._lines
        if line.tenant == ctx.entity.name and _matches(line, filter or {})
    ]  # already in dbId order: dbIds grow with acceptance
    has_previous = has_next = False
    if after_id is not None:
        has_previous = any(line.db_id <= after_id for line in items)
        items = [line for line in items if line.db_id > after_id]
    if before_id is not None:
        has_next = any(line.db_id >= before_id for line in items)
        items = [line for line in items if line.db_id < before_id]
    if first is None and last is None:
        first = MAX_FIRST
    if first is not None and len(items) > first:
        items, has_next = items[:first], True
    if last is not None and len(items) > last:
        items, has_previous = items[len(items) - last :], True
    edges = [{"cursor": str(line.db_id), "node": _gql_node(line)} for line in items]
    return {
        "edges": edges or None,  # Xledger answers null, not [], when nothing matches
        "pageInfo": {"hasNextPage": has_next, "hasPreviousPage": has_previous},
    }


# --- HTTP -----------------------------------------------------------------------------


@dataclass
class _Tenant:
    entity: Entity
    window: deque[float] = field(default_factory=deque)  # monotonic times of admitted requests
    in_flight: int = 0


def _iso_in(seconds: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=max(seconds, 0.0))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _coded(message: str, code: str, extensions: dict[str, Any] | None = None) -> web.Response:
    """Xledger's error shape: HTTP 200, top-level `code` on the error object."""
    error: dict[str, Any] = {"message": message, "code": code}
    if extensions:
        error["extensions"] = extensions
    return web.json_response({"errors": [error], "data": None})


def _bad_request(message: str, status: int = 400) -> web.Response:
    return web.json_response({"errors": [{"message": message}]}, status=status)


def _formatted(error: GraphQLError) -> dict[str, Any]:
    out = dict(error.formatted)
    code = (error.extensions or {}).get("code")
    if code:
        out["code"] = code
    return out


def _drop(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        transport.close()
    # Never reaches the client: aiohttp finds the connection closed and writes nothing.
    return web.Response(status=500)


class XledgerSandbox:
    """Xledger's GraphQL API on a local port, with limits and injectable faults."""

    def __init__(
        self,
        *,
        faults: FaultProfile = PROFILES["none"],
        burst_limit: int = 20,
        burst_window_s: float = 5.0,
        concurrency_limit: int = 4,
        seed: int | None = None,
    ) -> None:
        self.faults = faults
        self.burst_limit = burst_limit
        self.burst_window_s = burst_window_s
        self.concurrency_limit = concurrency_limit
        self.stats = SandboxStats()
        self.url: str | None = None
        self._rng = random.Random(seed)
        self._tenants: dict[str, _Tenant] = {}  # token → tenant; the only place a token lives
        self._lines: list[_Line] = []
        self._next_db_id = FIRST_DB_ID
        self._next_batch = 1
        self._runner: web.AppRunner | None = None

    def add_entity(self, token: str, entity: Entity) -> None:
        if not token or any(c.isspace() for c in token):
            raise ValueError("a token must be non-empty and without whitespace")
        if token in self._tenants:
            raise ValueError(f"that token is already in use (entity {entity.name!r})")
        self._tenants[token] = _Tenant(entity)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/graphql", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # No access log: nothing about a request is written anywhere. A short shutdown
        # timeout so a hanging commit-then-fail answer does not hold up stop().
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0][1]
        self.url = f"http://{host}:{bound}/graphql"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.url = None

    def ledger(self) -> list[dict[str, Any]]:
        """Every accepted GL line, in order of acceptance, flattened to codes."""
        return [self._flatten(line) for line in self._lines]

    def dump_ledger(self, path: str | os.PathLike[str]) -> int:
        lines = self.ledger()
        with open(path, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        return len(lines)

    @staticmethod
    def _flatten(line: _Line) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tenant": line.tenant,
            "batch": line.batch,
            "dbId": line.db_id,
            "extIdentifier": line.node.get("extIdentifier"),
            "trRegNumber": line.node.get("trRegNumber"),
            "postedDate": None,
            "account": None,
            "amount": None,
            "text": line.node.get("text"),
        }
        for key, value in line.node.items():
            if value is None:
                continue
            if isinstance(value, Decimal):
                value = f"{value:.2f}"
            elif isinstance(value, date):
                value = value.isoformat()
            elif key == "bankAccountRef":
                value = value.get("dbId") if value.get("dbId") is not None else value.get("code")
            else:
                value = _ref_code(value)
            out[key] = value
        return out

    def _store(self, entity: Entity, nodes: list[dict[str, Any]]) -> list[_Line]:
        batch = self._next_batch
        self._next_batch += 1
        created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        stored = []
        for node in nodes:
            stored.append(_Line(entity.name, self._next_db_id, batch, dict(node), created))
            self._next_db_id += 1
        self._lines += stored
        self.stats.accepted_batches += 1
        self.stats.accepted_lines += len(stored)
        return stored

    # -- request handling ---------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return _bad_request(f"Not found: {request.path}. Use POST /graphql.", status=404)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _bad_request("Use POST with a JSON body {query, variables}.")
        self.stats.requests += 1
        body = await request.read()
        faults = self.faults
        roll = self._rng.random()
        if roll < faults.error_5xx:
            self.stats.fault("5xx")
            status = self._rng.choice((502, 503))
            reason = "Bad Gateway" if status == 502 else "Service Unavailable"
            return web.Response(status=status, text=f"{status} {reason}")
        if roll < faults.error_5xx + faults.drop:
            self.stats.fault("drop")
            return _drop(request)
        if roll < faults.error_5xx + faults.drop + faults.burst_error:
            self.stats.fault("burst")
            self.stats.spurious_burst_errors_sent += 1
            return self._burst_error(self.burst_window_s)

        tenant = self._authenticate(request)
        if isinstance(tenant, web.Response):
            return tenant
        name = tenant.entity.name
        now = time.monotonic()
        self.stats.request_times.setdefault(name, []).append(now)

        # Sliding window: only admitted requests count, so a refused one does not extend it.
        window = tenant.window
        while window and window[0] <= now - self.burst_window_s:
            window.popleft()
        if len(window) >= self.burst_limit:
            self.stats.burst_errors_sent += 1
            return self._burst_error(window[0] + self.burst_window_s - now)
        window.append(now)

        if tenant.in_flight >= self.concurrency_limit:
            self.stats.concurrency_errors_sent += 1
            return _coded("Too many concurrent requests", "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED")
        tenant.in_flight += 1
        self.stats.max_in_flight[name] = max(
            self.stats.max_in_flight.get(name, 0), tenant.in_flight
        )
        try:
            entity = tenant.entity
            if entity.credits is not None:
                if entity.credits <= 0:
                    self.stats.credit_errors_sent += 1
                    return _coded(
                        "Insufficient credits",
                        "BAD_REQUEST.INSUFFICIENT_CREDITS",
                        {"resetAt": _iso_in(CREDITS_RESET_S)},
                    )
                entity.credits -= 1
            if self._rng.random() < faults.slow:
                self.stats.fault("slow")
                await asyncio.sleep(faults.slow_seconds)
            response, committed = self._graphql(entity, body)
        finally:
            tenant.in_flight -= 1

        # The batch is stored; only the answer fails (the unknown outcome a client must handle).
        if committed and self._rng.random() < faults.commit_then_fail:
            kind = self._rng.choice(("500", "drop", "hang"))
            self.stats.fault(f"commit-then-fail:{kind}")
            if kind == "500":
                return web.Response(status=500, text="500 Internal Server Error")
            if kind == "hang":
                await asyncio.sleep(faults.hang_seconds)
            return _drop(request)
        return response

    def _authenticate(self, request: web.Request) -> _Tenant | web.Response:
        match = _TOKEN_HEADER.fullmatch(request.headers.get("Authorization", "").strip())
        if match is None:
            self.stats.auth_failures += 1
            return _coded(BAD_TOKEN_FORMAT, "BAD_REQUEST.BAD_TOKEN_FORMAT")
        tenant = self._tenants.get(match.group(1))
        if tenant is None:
            self.stats.auth_failures += 1
            return _coded("Invalid API token", "UNAUTHORIZED")
        return tenant

    def _burst_error(self, reset_in: float) -> web.Response:
        return _coded(
            "Too many requests",
            "BAD_REQUEST.BURST_RATE_LIMIT_REACHED",
            {"resetAt": _iso_in(reset_in)},
        )

    def _graphql(self, entity: Entity, body: bytes) -> tuple[web.Response, bool]:
        """Parse, validate and execute one request; True when a batch was stored."""
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _bad_request("The body is not JSON."), False
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return _bad_request('The body must be a JSON object with a string "query".'), False
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if variables is not None and not isinstance(variables, dict):
            return _bad_request('"variables" must be an object or null.'), False
        if operation_name is not None and not isinstance(operation_name, str):
            return _bad_request('"operationName" must be a string or null.'), False

        schema = _schema()
        try:
            document = parse(payload["query"])
        except GraphQLError as exc:
            self.stats.rejected_validation += 1
            return web.json_response({"errors": [_formatted(exc)]}), False
        operation = get_operation_ast(document, operation_name)
        if operation is not None:
            if operation.operation is OperationType.MUTATION:
                self.stats.mutations += 1
            else:
                self.stats.queries += 1
        errors = validate(schema, document)
        if errors:
            self.stats.rejected_validation += 1
            return web.json_response({"errors": [_formatted(e) for e in errors]}), False

        ctx = _Context(self, entity)
        result = execute_sync(
            schema,
            document,
            context_value=ctx,
            variable_values=variables,
            operation_name=operation_name,
        )
        all_errors = [*(result.errors or []), *ctx.errors]
        out: dict[str, Any] = {}
        if all_errors:
            out["errors"] = [_formatted(e) for e in all_errors]
            if not ctx.batches:
                self.stats.rejected_validation += 1
        out["data"] = result.data
        return web.json_response(out), bool(ctx.batches)


# --- the CLI entry point --------------------------------------------------------------

_DEMO_OWNER_DB_ID = 42_365_431


def _demo_token(ref: str, token_dir: Path | None) -> str:
    from worker.xledger.secrets import MissingToken, SecretStore

    try:
        return SecretStore(token_dir=token_dir).token(ref).reveal()
    except MissingToken:
        if token_dir is None:
            raise
    if Path(ref).name != ref or ref.startswith("."):
        raise ValueError(f"token_ref {ref!r} cannot name a file in {token_dir}")
    token = secrets.token_urlsafe(24)
    token_dir.mkdir(parents=True, exist_ok=True)
    path = token_dir / ref
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)  # the file may have existed (empty) with a wider mode
    return token


def serve(port: int, profile: str, token_dir: Path | None) -> None:
    """Serve the three demo tenants until Ctrl-C or SIGTERM."""
    if profile not in PROFILES:
        raise ValueError(f"unknown fault profile {profile!r}; valid: {', '.join(PROFILES)}")
    from worker.demo.registers import demo_snapshots

    sandbox = XledgerSandbox(faults=PROFILES[profile])
    names = []
    for i, snapshot in enumerate(demo_snapshots()):
        token = _demo_token(snapshot.settings.token_ref, token_dir)
        sandbox.add_entity(token, entity_from_snapshot(snapshot, _DEMO_OWNER_DB_ID + i))
        names.append(snapshot.tenant_id)
    asyncio.run(_serve_until_stopped(sandbox, port, profile, names))


async def _serve_until_stopped(
    sandbox: XledgerSandbox, port: int, profile: str, names: list[str]
) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopped.set)
    url = await sandbox.start(port=port)
    tenants = ", ".join(names)
    print(f"Xledger sandbox at {url} (fault profile {profile}; tenants {tenants})", flush=True)
    try:
        await stopped.wait()
    finally:
        await sandbox.stop()
