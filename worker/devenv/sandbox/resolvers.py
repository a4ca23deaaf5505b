"""The in-memory GL store and the resolvers of addGLImportItems, glImportItems and
journalEntries; Xledger's import job, which makes journal entries of import items. The
setup reads (accounts, object kinds, …) are `setup_resolvers.py`."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo, GraphQLSchema

from worker.contracts.submission import CODE_FIELDS, GL_OBJECT_FIELDS
from worker.devenv.sandbox.entities import Entity
from worker.devenv.sandbox.faults import SandboxStats
from worker.devenv.sandbox.schema import xledger_schema
from worker.devenv.sandbox.setup_resolvers import attach_setup_resolvers

MAX_INPUTS = 500  # help centre 8715787519634: a mass mutation takes at most 500 nodes
MAX_FIRST = 10_000  # at most 10 000 records per query
FIRST_DB_ID = 1_000_001
FIRST_JOURNAL_DB_ID = 50_000_001  # journal entries have dbIds of their own
# Xledger's reference fields of an import item: ours (a GL line's) and the ones we never send.
_REFS = (*CODE_FIELDS, "currency", "transactionSource", "jobLevel", "xgl", "bankAccountRef")
_DATES = ("postedDate", "invoiceDate", "dueDate")


@dataclass
class JournalEntry:
    """What the import job made of an import item: its own dbId, its voucher's number."""

    db_id: int
    transaction_number: int
    imported_at: str


@dataclass
class Line:
    """One posting: an import item, in staging until the import job clears it (a fault
    profile), and in the journal once the import job has processed it."""

    tenant: str
    db_id: int
    batch: int
    node: dict[str, Any]  # the coerced input node: Decimals, dates, ref dicts
    created_at: str
    stored_at: float = 0.0  # on the sandbox's clock: when the import job may take it
    staged: bool = True
    entry: JournalEntry | None = None


@dataclass
class Context:
    ledger: Ledger
    entity: Entity
    errors: list[GraphQLError] = field(default_factory=list)  # extra, one per problem
    batches: list[int] = field(default_factory=list)


_REQUIRED = ("account", "amount", "postedDate", "trRegNumber")


def ref_code(ref: Any) -> Any:
    if not isinstance(ref, dict):
        return ref
    return ref.get("code") if ref.get("code") is not None else ref.get("dbId")


def _ref(n: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = n.get(name)
    return None if value is None else {"code": value.get("code"), "dbId": value.get("dbId")}


def _gql_node(line: Line) -> dict[str, Any]:
    n = line.node

    def ref(name: str) -> dict[str, Any] | None:
        return _ref(n, name)

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
        **{name: ref(name) for name in (*GL_OBJECT_FIELDS, "project", "bankAccountRef")},
        "createdAt": line.created_at,
    }


def _journal_node(line: Line) -> dict[str, Any]:
    n, entry = line.node, line.entry
    assert entry is not None
    return {
        "dbId": entry.db_id,
        "extIdentifier": n.get("extIdentifier"),
        "postedDate": n.get("postedDate"),
        "amount": n.get("amount"),
        "text": n.get("text"),
        "account": _ref(n, "account"),
        "currency": _ref(n, "currency"),
        "taxRule": _ref(n, "taxRule"),
        **{name: _ref(n, name) for name in (*GL_OBJECT_FIELDS, "project")},
        "bankAccount": _ref(n, "bankAccountRef"),
        "createdAt": entry.imported_at,
        "transactionHeader": {
            "dbId": entry.transaction_number,
            "transactionNumber": entry.transaction_number,
            "importedAt": entry.imported_at,
            "postedDate": n.get("postedDate"),
        },
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
        *((name, entity.field_values(name), set()) for name in GL_OBJECT_FIELDS),
        ("project", entity.projects, set()),
        ("taxRule", entity.tax_rules, set()),
        ("currency", entity.currencies, set()),
        ("bankAccountRef", set(), entity.bank_account_ids()),
    ]
    for name, codes, db_ids in checks:
        ref = node.get(name)
        if ref is not None:
            problems += _check_ref(entity, name, ref, codes, db_ids)
    return problems


def _resolve_add_gl_import_items(
    _root: Any, info: GraphQLResolveInfo, inputs: list[dict[str, Any]]
) -> dict[str, Any] | None:
    ctx: Context = info.context
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
    lines = ctx.ledger.store(ctx.entity, [item["node"] for item in inputs])
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


def _matches(line: Line, f: dict[str, Any], db_id: int | None = None) -> bool:
    """Whether the line passes a filter; `db_id` is the node's own (a journal entry's)."""
    n = line.node
    own = line.db_id if db_id is None else db_id
    posted = n["postedDate"].isoformat()
    checks = (
        ("dbId", lambda v: own == v),
        ("dbId_in", lambda v: own in v),
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
    ctx: Context = info.context
    items = [
        line
        for line in ctx.ledger.of(ctx.entity.name)
        if line.staged and _matches(line, filter or {})
    ]  # already in dbId order: dbIds grow with acceptance
    return _connection(items, lambda line: line.db_id, _gql_node, info, first, last, after, before)


def _resolve_journal_entries(
    _root: Any,
    info: GraphQLResolveInfo,
    first: int | None = None,
    last: int | None = None,
    after: str | None = None,
    before: str | None = None,
    filter: dict[str, Any] | None = None,  # the GraphQL argument's name
) -> dict[str, Any]:
    ctx: Context = info.context
    items = sorted(
        (
            line
            for line in ctx.ledger.of(ctx.entity.name)
            if line.entry is not None and _matches(line, filter or {}, line.entry.db_id)
        ),
        key=_entry_db_id,
    )
    return _connection(items, _entry_db_id, _journal_node, info, first, last, after, before)


def _entry_db_id(line: Line) -> int:
    assert line.entry is not None
    return line.entry.db_id


def _connection(
    items: list[Line],
    db_id: Callable[[Line], int],
    node: Callable[[Line], dict[str, Any]],
    info: GraphQLResolveInfo,
    first: int | None,
    last: int | None,
    after: str | None,
    before: str | None,
) -> dict[str, Any]:
    """A Relay connection over `items` (in dbId order), cursors being dbIds."""
    for name, count in (("first", first), ("last", last)):
        if count is not None and not 0 <= count <= MAX_FIRST:
            raise GraphQLError(
                f"{name}: At most {MAX_FIRST} records per query.",
                info.field_nodes,
                path=info.path.as_list(),
                extensions={"code": "BAD_REQUEST"},
            )
    after_id, before_id = _cursor(after, "after", info), _cursor(before, "before", info)
    has_previous = has_next = False
    if after_id is not None:
        has_previous = any(db_id(line) <= after_id for line in items)
        items = [line for line in items if db_id(line) > after_id]
    if before_id is not None:
        has_next = any(db_id(line) >= before_id for line in items)
        items = [line for line in items if db_id(line) < before_id]
    if first is None and last is None:
        first = MAX_FIRST
    if first is not None and len(items) > first:
        items, has_next = items[:first], True
    if last is not None and len(items) > last:
        items, has_previous = items[len(items) - last :], True
    edges = [{"cursor": str(db_id(line)), "node": node(line)} for line in items]
    return {
        "edges": edges or None,  # Xledger answers null, not [], when nothing matches
        "pageInfo": {"hasNextPage": has_next, "hasPreviousPage": has_previous},
    }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Ledger:
    """Every accepted GL line of every entity, in order of acceptance (dbIds grow), and
    the import job that makes journal entries of them."""

    def __init__(self, stats: SandboxStats, clock: Callable[[], float] = time.monotonic) -> None:
        self.lines: list[Line] = []
        # The same lines by entity, and those the import job has yet to take (both in dbId
        # order): a lookup or an import job reads only these, not every line of every
        # entity (at the month start's 100,000 lines the whole-ledger scans made the
        # bench's sandbox, not the worker, the slowest step).
        self._by_tenant: dict[str, list[Line]] = defaultdict(list)
        self._unimported: list[Line] = []
        self._stats = stats
        self._clock = clock
        self._next_db_id = FIRST_DB_ID
        self._next_journal_db_id = FIRST_JOURNAL_DB_ID
        self._next_batch = 1
        self._next_transaction: dict[str, int] = defaultdict(lambda: 1)

    def store(self, entity: Entity, nodes: list[dict[str, Any]]) -> list[Line]:
        return self._store(entity.name, nodes)

    def _store(self, tenant: str, nodes: list[dict[str, Any]]) -> list[Line]:
        batch = self._next_batch
        self._next_batch += 1
        created, now = _now_iso(), self._clock()
        stored = []
        for node in nodes:
            stored.append(Line(tenant, self._next_db_id, batch, dict(node), created, now))
            self._next_db_id += 1
        self.lines += stored
        self._by_tenant[tenant] += stored
        self._unimported += stored
        self._stats.accepted_batches += 1
        self._stats.accepted_lines += len(stored)
        return stored

    def run_import_job(self, *, delay_s: float = 0.0, clear_staging: bool = False) -> int:
        """Xledger's import job: every import item stored at least `delay_s` ago becomes
        a journal entry, one transaction number per voucher (`trRegNumber` within its
        batch); with `clear_staging` the processed items leave `glImportItems`. Returns
        the number of items processed."""
        now, imported_at = self._clock(), _now_iso()
        vouchers: dict[tuple[str, int, Any], int] = {}
        done = 0
        # In order of storing (stored_at never falls along it): the first line too young
        # ends the job, every line after it is as young.
        for line in self._unimported:
            if now - line.stored_at < delay_s:
                break
            key = (line.tenant, line.batch, line.node.get("trRegNumber"))
            if key not in vouchers:
                vouchers[key] = self._next_transaction[line.tenant]
                self._next_transaction[line.tenant] += 1
            line.entry = JournalEntry(self._next_journal_db_id, vouchers[key], imported_at)
            self._next_journal_db_id += 1
            if clear_staging:
                line.staged = False
            done += 1
        del self._unimported[:done]
        self._stats.imported_lines += done
        return done

    def of(self, tenant: str) -> list[Line]:
        """The entity's lines, in dbId order."""
        return self._by_tenant.get(tenant, [])

    def again(self, tenant: str, ext_ids: Collection[str]) -> list[Line]:
        """The lines of these external identifiers stored once more, as a new batch: as if
        a client had posted them a second time."""
        first: dict[str, Line] = {}
        for line in self.of(tenant):
            ext = _ext(line)
            if ext in ext_ids:
                first.setdefault(ext, line)
        if not first:
            return []
        return self._store(tenant, [dict(line.node) for line in first.values()])

    def delete(self, tenant: str, ext_ids: Collection[str]) -> int:
        """Every line of these external identifiers gone, from staging and the journal."""
        kept = [x for x in self.lines if x.tenant != tenant or _ext(x) not in ext_ids]
        gone = len(self.lines) - len(kept)
        self._index(kept)
        return gone

    def load(self, rows: Iterable[dict[str, Any]]) -> int:
        """Lines from a ledger dump (`flatten`'s rows), dbIds and batches kept: a ledger a
        sandbox left behind, served again. The import job takes them as newly stored."""
        now = self._clock()
        loaded = 0
        for row in rows:
            node = _node_of(row)
            line = Line(str(row["tenant"]), int(row["dbId"]), int(row["batch"]), node, "", now)
            line.created_at = str(row.get("createdAt") or _now_iso())
            self.lines.append(line)
            self._next_db_id = max(self._next_db_id, line.db_id + 1)
            self._next_batch = max(self._next_batch, line.batch + 1)
            loaded += 1
        self._index(sorted(self.lines, key=lambda x: x.db_id))
        return loaded

    def _index(self, lines: list[Line]) -> None:
        """`lines` (in dbId order) as the ledger's, indexed again."""
        self.lines = lines
        self._by_tenant = defaultdict(list)
        for line in lines:
            self._by_tenant[line.tenant].append(line)
        unimported = (line for line in lines if line.entry is None)
        self._unimported = sorted(unimported, key=lambda x: (x.stored_at, x.db_id))


def _ext(line: Line) -> str:
    return str(line.node.get("extIdentifier"))


def _node_of(row: dict[str, Any]) -> dict[str, Any]:
    """A stored node from a dump row: codes back to references, amounts and dates typed."""
    node: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or key in _DUMP_ONLY:
            continue
        if key in _REFS:
            as_id = key == "bankAccountRef" and isinstance(value, int)
            node[key] = {"dbId": value} if as_id else {"code": str(value)}
        elif key in ("amount", "invoiceAmount"):
            node[key] = Decimal(str(value))
        elif key in _DATES:
            node[key] = date.fromisoformat(str(value))
        else:
            node[key] = value
    return node


_DUMP_ONLY = ("tenant", "batch", "dbId", "createdAt", "inStaging", "journalEntry")


def flatten(line: Line) -> dict[str, Any]:
    """A stored line as the ledger dump shows it: references flattened to their codes."""
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
        "createdAt": line.created_at,
        "inStaging": line.staged,
        "journalEntry": None
        if line.entry is None
        else {
            "dbId": line.entry.db_id,
            "transactionNumber": line.entry.transaction_number,
            "importedAt": line.entry.imported_at,
        },
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
            value = ref_code(value)
        out[key] = value
    return out


@cache
def executable_schema() -> GraphQLSchema:
    """Our SDL with the scalars and resolvers attached; built once, shared by sandboxes."""
    schema = xledger_schema()
    assert schema.query_type is not None and schema.mutation_type is not None
    schema.query_type.fields["glImportItems"].resolve = _resolve_gl_import_items
    schema.query_type.fields["journalEntries"].resolve = _resolve_journal_entries
    schema.mutation_type.fields["addGLImportItems"].resolve = _resolve_add_gl_import_items
    attach_setup_resolvers(schema)  # accounts, objectKinds, … (setup_resolvers.py)
    return schema
