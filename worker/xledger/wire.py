"""What goes over the wire to Xledger and back: the GraphQL documents, the nodes built
from a submission's lines, and Xledger's answers read into plain data. No I/O here.

A payment's lines are looked up where Xledger may hold them (R18, decided): the import
staging area (`glImportItems`) and the journal (`journalEntries`), both root fields in one
document, so one request and one credit. Every node found is kept: an external identifier
held more than once is a double, reported, never hidden.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from worker.contracts import SubmissionFields
from worker.contracts.submission import CODE_FIELDS, GL_OBJECT_FIELDS, GLLine
from worker.xledger.errors import Refused, TransientError, classify_errors

MAX_NODES = 500  # per mass mutation (Xledger help centre 8715787519634)
LINES_PER_PAYMENT = 2  # R18
MAX_PAYMENTS_PER_REQUEST = MAX_NODES // LINES_PER_PAYMENT
MAX_RECORDS_PER_QUERY = 10_000

ADD_GL_IMPORT_ITEMS = """
mutation AddGLImportItems($inputs: [AddGLImportItemsInput!]!) {
  addGLImportItems(inputs: $inputs) {
    edges { clientId node { dbId extIdentifier } }
  }
}
""".strip()

STAGING = "glImportItems"  # the import staging area: what addGLImportItems stores
JOURNAL = "journalEntries"  # what Xledger's import job makes of it
LOOKUP_ROOTS = (STAGING, JOURNAL)
_AFTER = {STAGING: "afterItems", JOURNAL: "afterEntries"}
# Enough to tell a posting from its journal entry (see `postings`), and no more: Xledger
# charges per MB downloaded too.
_FIELDS = {
    STAGING: "dbId extIdentifier createdAt",
    JOURNAL: "dbId extIdentifier transactionHeader { importedAt transactionNumber }",
}
# What a reconciliation compares with the submission (R18): every field that is posted.
# The bank account reads back as the import item's `bankAccountRef` and the journal
# entry's `bankAccount` (inferred from the input's name and the journal's own field).
_REFS_READ = ("currency", "taxRule", *GL_OBJECT_FIELDS, "project")
_BANK_READ = {"glImportItems": "bankAccountRef", "journalEntries": "bankAccount"}
DETAIL_NAMES = ("currency", "text", *_REFS_READ[1:], "bankAccountRef")


def _detail_fields(root: str) -> str:
    refs = " ".join(f"{name} {{ code }}" for name in _REFS_READ)
    return f" postedDate amount account {{ code }} text {refs} {_BANK_READ[root]} {{ dbId code }}"


# --- the lookup ---------------------------------------------------------------------------


def lookup_query(roots: Sequence[str] = LOOKUP_ROOTS, details: bool = False) -> str:
    """One document asking each of `roots` for the nodes whose `extIdentifier` is in `$ids`.

    The first request asks both roots; a next page asks only the roots that have one.
    `details` adds what a reconciliation compares (account, amount, date).
    """
    variables = ["$ids: [String!]!", "$first: Int!", *(f"${_AFTER[r]}: String" for r in roots)]
    fields = "\n".join(
        f"  {root}(first: $first, after: ${_AFTER[root]}, filter: {{ extIdentifier_in: $ids }}) "
        f"{{\n    edges {{ cursor node {{ {_FIELDS[root]}"
        f"{_detail_fields(root) if details else ''} }} }}\n"
        "    pageInfo { hasNextPage }\n  }"
        for root in roots
    )
    return f"query LookupByExtIdentifier({', '.join(variables)}) {{\n{fields}\n}}"


def lookup_variables(ids: Sequence[str], after: Mapping[str, str | None]) -> dict[str, Any]:
    """Variables for `lookup_query(list(after))`: a page large enough for every id at once
    (each root may hold each id more than once, hence the margin)."""
    first = min(MAX_RECORDS_PER_QUERY, 2 * len(ids) + 10)
    return {"ids": list(ids), "first": first} | {_AFTER[r]: a for r, a in after.items()}


@dataclass(frozen=True, slots=True)
class LookupNode:
    """One node an `extIdentifier` lookup found, in the staging area or the journal."""

    root: str  # STAGING or JOURNAL
    db_id: int
    ext_id: str
    created_at: datetime | None = None  # an import item's
    imported_at: datetime | None = None  # a journal entry's transaction header's
    transaction_number: str | None = None  # a journal entry's
    # With `details` only:
    posted_date: str | None = None
    amount: Decimal | None = None
    account: str | None = None
    # With `details`: the other posted fields (DETAIL_NAMES), each its code or None.
    details: tuple[tuple[str, str | None], ...] | None = None


@dataclass(frozen=True, slots=True)
class LookupPage:
    nodes: list[LookupNode]
    after: dict[str, str]  # root → the cursor of its next page; empty on the last page


def read_lookup(data: dict[str, Any], roots: Sequence[str] = LOOKUP_ROOTS) -> LookupPage:
    """Every node of each root asked. An answer of the wrong shape is not trusted (a node
    read wrongly is a payment posted twice): TransientError, and the lookup is asked again."""
    nodes: list[LookupNode] = []
    after: dict[str, str] = {}
    for root in roots:
        conn = data.get(root) or {}  # null: nothing to show for this root
        if not isinstance(conn, dict):
            raise TransientError(f"unreadable lookup answer: {root} is not a connection")
        edges = conn.get("edges") or []  # Xledger answers `edges: null` when none match
        if not isinstance(edges, list):
            raise TransientError(f"unreadable lookup answer: {root}.edges is not a list")
        for edge in edges:
            nodes.append(_lookup_node(root, edge))
        if (conn.get("pageInfo") or {}).get("hasNextPage") and edges:
            cursor = edges[-1].get("cursor")
            if not isinstance(cursor, str) or not cursor:
                raise TransientError(f"unreadable lookup answer: {root} has no cursor")
            after[root] = cursor
    return LookupPage(nodes, after)


def _lookup_node(root: str, edge: Any) -> LookupNode:
    node = edge.get("node") if isinstance(edge, dict) else None
    if not isinstance(node, dict):
        raise TransientError(f"unreadable lookup answer: a {root} edge without a node")
    ext_id, db_id = node.get("extIdentifier"), _int(node.get("dbId"))
    if not isinstance(ext_id, str) or db_id is None:
        raise TransientError(f"unreadable lookup answer: a {root} node without its ids")
    header = node.get("transactionHeader") or {}
    account = node.get("account") or {}
    number = header.get("transactionNumber") if isinstance(header, dict) else None
    return LookupNode(
        root=root,
        db_id=db_id,
        ext_id=ext_id,
        created_at=_moment(node.get("createdAt")),
        imported_at=_moment(header.get("importedAt")) if isinstance(header, dict) else None,
        transaction_number=None if number is None else str(number),
        posted_date=node.get("postedDate") if isinstance(node.get("postedDate"), str) else None,
        amount=_decimal(node.get("amount")),
        account=account.get("code") if isinstance(account, dict) else None,
        details=_details(root, node) if "currency" in node else None,
    )


def _details(root: str, node: dict[str, Any]) -> tuple[tuple[str, str | None], ...]:
    def code(ref: Any) -> str | None:
        if not isinstance(ref, dict):
            return None
        value = ref.get("code") if ref.get("code") is not None else ref.get("dbId")
        return None if value is None else str(value)

    text = node.get("text")
    out: list[tuple[str, str | None]] = [("text", text if isinstance(text, str) else None)]
    out += [(name, code(node.get(name))) for name in _REFS_READ]
    out.append(("bankAccountRef", code(node.get(_BANK_READ[root]))))
    return tuple(out)


@dataclass
class Lookup:
    """What Xledger holds of some external identifiers: every node, from both places."""

    nodes: list[LookupNode] = field(default_factory=list)

    def by_ext_id(self) -> dict[str, list[LookupNode]]:
        out: dict[str, list[LookupNode]] = defaultdict(list)
        for n in self.nodes:
            out[n.ext_id].append(n)
        return out

    def found(self) -> dict[str, int]:
        """extIdentifier → the dbId a receipt names (`receipt_db_id`)."""
        return {ext_id: receipt_db_id(nodes) for ext_id, nodes in self.by_ext_id().items()}

    def duplicates(self) -> list[str]:
        """The external identifiers Xledger holds more than once (see `postings`)."""
        return sorted(e for e, nodes in self.by_ext_id().items() if postings(nodes) > 1)


def receipt_db_id(nodes: Sequence[LookupNode]) -> int:
    """The dbId a receipt names for a line Xledger holds: its import item's (what the
    mutation answered when it was posted), else its journal entry's."""
    staged = [n.db_id for n in nodes if n.root == STAGING]
    return min(staged) if staged else min(n.db_id for n in nodes)


def postings(nodes: Sequence[LookupNode]) -> int:
    """How many times Xledger holds one external identifier (`posting_nodes`)."""
    return len(posting_nodes(nodes))


def posting_nodes(nodes: Sequence[LookupNode]) -> list[LookupNode]:
    """One node per posting of one external identifier, from its nodes in both places:
    every journal entry, and the import items that are not the source of one.

    An import item and the journal entry Xledger's import job made of it are one posting,
    not two; nothing public says which item became which entry, or whether processed items
    stay in staging. So (decided): two import items are two postings, two journal entries
    are two postings, and an item counts on top of the entries only when it cannot be the
    source of any of them: when it was created after every unmatched entry was imported.
    Where a time is missing, the item is taken to be the entry's source (never a double
    made up). A double whose second item is still waiting to be imported while the first
    one's item has left staging and was created before that import is seen once the
    second item is imported too (then two journal entries).
    """
    items = [n for n in nodes if n.root == STAGING]
    # Entries in the order they were imported, those without a time last: an item that may
    # be an entry's source may be a later entry's too, so this order matches the most.
    entries = sorted((n for n in nodes if n.root != STAGING), key=_imported_key)
    unmatched = list(items)
    for entry in entries:
        for item in unmatched:
            if _may_be_source(item, entry):
                unmatched.remove(item)
                break
    return entries + unmatched


def _may_be_source(item: LookupNode, entry: LookupNode) -> bool:
    if item.created_at is None or entry.imported_at is None:
        return True
    return item.created_at <= entry.imported_at


def _imported_key(n: LookupNode) -> tuple[bool, datetime | None]:
    return (n.imported_at is None, n.imported_at)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


# --- the mutation -----------------------------------------------------------------------


def mutation_inputs(
    subs: Sequence[SubmissionFields], transaction_source: str
) -> list[dict[str, Any]]:
    """`addGLImportItems` inputs: a node per line, `clientId` "<payment index>:<line no>"."""
    vouchers = voucher_numbers(subs)
    return [
        {"clientId": f"{i}:{n}", "node": node(line, vouchers[sub.payment_id], transaction_source)}
        for i, sub in enumerate(subs)
        for n, line in enumerate(sub.lines, start=1)
    ]


def node(line: GLLine, voucher: int, transaction_source: str) -> dict[str, Any]:
    """One GL import item: the line's own fields, references as `{code}` (R18)."""
    out: dict[str, Any] = {
        "trRegNumber": voucher,
        "transactionSource": {"code": transaction_source},
        "postedDate": line.postedDate.isoformat(),
        "amount": f"{line.amount:.2f}",
        "currency": {"code": line.currency},
        "text": line.text,
        "extIdentifier": line.extIdentifier,
    }
    for name in CODE_FIELDS:
        value = getattr(line, name)
        if value is not None:
            out[name] = {"code": value}
    if line.bankAccountRef is not None:  # R4: the Bankkonti-pkey is a dbId
        ref = line.bankAccountRef
        out["bankAccountRef"] = {"dbId": int(ref)} if ref.isdigit() else {"code": ref}
    return out


def voucher_numbers(subs: Sequence[SubmissionFields]) -> dict[str, int]:
    """A stable voucher number (`trRegNumber`) per payment, unique within the request.

    Derived from tenant and payment, so a resend carries the same number (decided:
    Xledger types it as an integer; our payment ids are strings).
    """
    out: dict[str, int] = {}
    used: set[int] = set()
    for sub in subs:
        digest = hashlib.sha256(f"{sub.tenant_id}:{sub.payment_id}".encode()).digest()
        number = 100_000_000 + int.from_bytes(digest[:8], "big") % 900_000_000
        while number in used:  # a collision within one request: step deterministically
            number = 100_000_000 + (number - 99_999_999) % 900_000_000
        used.add(number)
        out[sub.payment_id] = number
    return out


def read_mutation(
    data: dict[str, Any], subs: Sequence[SubmissionFields]
) -> dict[tuple[str, int], int]:
    """(payment id, line no) → dbId, for the lines the answer names by a `clientId` we sent.

    An edge without a readable node (`node: null`, no dbId) names nothing: the caller
    finds the line missing and looks it up, as for any answer it cannot trust."""
    payload = data.get("addGLImportItems")
    edges = (payload.get("edges") if isinstance(payload, dict) else None) or []
    db_ids: dict[tuple[str, int], int] = {}
    for edge in edges if isinstance(edges, list) else []:
        if not isinstance(edge, dict):
            continue
        i_str, _, n_str = str(edge.get("clientId", "")).partition(":")
        node = edge.get("node")
        db_id = _int(node.get("dbId")) if isinstance(node, dict) else None
        if i_str.isdigit() and n_str.isdigit() and int(i_str) < len(subs) and db_id is not None:
            db_ids[(subs[int(i_str)].payment_id, int(n_str))] = db_id
    return db_ids


# --- answers and refusals -----------------------------------------------------------------


def read_answer(status: int, body: Any, now: datetime) -> dict[str, Any]:
    """The `data` of a decoded GraphQL answer, or the XledgerError its `errors` describe."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        raise classify_errors(errors, now)
    if status != 200 or not isinstance(body.get("data"), dict):
        raise Refused([f"HTTP {status}: unexpected answer"])
    data: dict[str, Any] = body["data"]
    return data


class RefusedCode(NamedTuple):
    field: str  # a GLLine field name: account, taxRule, glObject1, bankAccountRef, …
    value: str
    message: str  # Xledger's own words


_NO_VALUE = re.compile(
    r"^(?P<field>\w+)\.(?P<key>code|dbId): No value matching owner \S+, (?:code|dbId) "
    r"'?(?P<value>[^']*?)'?\.?$"
)


def refused_code(message: str) -> RefusedCode | None:
    """The field and code a refusal names (`account.code: No value matching owner
    42365431, code '9999'.`), or None for a message that names none."""
    m = _NO_VALUE.match(message.strip())
    return RefusedCode(m["field"], m["value"], message) if m else None


def blame(messages: list[str], subs: Sequence[SubmissionFields]) -> dict[str, str]:
    """Payment id → Xledger's messages, for the payments whose lines hold a refused code.

    Every payment carrying a code Xledger refused would be refused. Messages that name no
    code blame nobody, and the caller bisects instead.
    """
    refused = [r for r in map(refused_code, messages) if r is not None]
    blamed: dict[str, list[str]] = {}
    for sub in subs:
        for line in sub.lines:
            for r in refused:
                if str(getattr(line, r.field, None)) == r.value:
                    blamed.setdefault(sub.payment_id, []).append(r.message)
    return {pid: " ".join(dict.fromkeys(msgs)) for pid, msgs in blamed.items()}
