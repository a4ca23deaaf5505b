"""What goes over the wire to Xledger and back: the GraphQL documents, the nodes built
from a Submission's lines, and Xledger's answers read into plain data. No I/O here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from worker.contracts import Submission
from worker.contracts.submission import GLLine
from worker.xledger.errors import Refused, classify_errors

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

GL_IMPORT_ITEMS_BY_EXT_ID = """
query GLImportItemsByExtIdentifier($ids: [String!]!, $first: Int!, $after: String) {
  glImportItems(first: $first, after: $after, filter: { extIdentifier_in: $ids }) {
    edges { cursor node { dbId extIdentifier } }
    pageInfo { hasNextPage }
  }
}
""".strip()

_REF_FIELDS = (
    "account",
    "taxRule",
    "glObject1",
    "glObject2",
    "glObject3",
    "glObject4",
    "glObject5",
    "project",
)


# --- the lookup ---------------------------------------------------------------------------


def lookup_variables(ids: list[str], after: str | None) -> dict[str, Any]:
    """Variables for `GL_IMPORT_ITEMS_BY_EXT_ID`: a page large enough for every id at once."""
    first = min(MAX_RECORDS_PER_QUERY, 2 * len(ids) + 10)
    return {"ids": ids, "first": first, "after": after}


@dataclass(frozen=True, slots=True)
class LookupPage:
    found: dict[str, int]  # extIdentifier → dbId, the first one where Xledger has two
    after: str | None  # the cursor to ask for the next page from; None on the last page


def read_lookup(data: dict[str, Any]) -> LookupPage:
    conn = data.get("glImportItems") or {}
    edges = conn.get("edges") or []  # Xledger answers `edges: null` when none match
    found: dict[str, int] = {}
    for edge in edges:
        node = edge["node"]
        found.setdefault(node["extIdentifier"], int(node["dbId"]))
    more = (conn.get("pageInfo") or {}).get("hasNextPage") and edges
    return LookupPage(found, edges[-1]["cursor"] if more else None)


# --- the mutation -----------------------------------------------------------------------


def mutation_inputs(subs: Sequence[Submission], transaction_source: str) -> list[dict[str, Any]]:
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
    for name in _REF_FIELDS:
        value = getattr(line, name)
        if value is not None:
            out[name] = {"code": value}
    if line.bankAccountRef is not None:  # R4: the Bankkonti-pkey is a dbId
        ref = line.bankAccountRef
        out["bankAccountRef"] = {"dbId": int(ref)} if ref.isdigit() else {"code": ref}
    return out


def voucher_numbers(subs: Sequence[Submission]) -> dict[str, int]:
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


def read_mutation(data: dict[str, Any], subs: Sequence[Submission]) -> dict[tuple[str, int], int]:
    """(payment id, line no) → dbId, for the lines the answer names by a `clientId` we sent."""
    edges = (data.get("addGLImportItems") or {}).get("edges") or []
    db_ids: dict[tuple[str, int], int] = {}
    for edge in edges:
        i_str, _, n_str = str(edge.get("clientId", "")).partition(":")
        if i_str.isdigit() and n_str.isdigit() and int(i_str) < len(subs):
            db_ids[(subs[int(i_str)].payment_id, int(n_str))] = int(edge["node"]["dbId"])
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


def blame(messages: list[str], subs: Sequence[Submission]) -> dict[str, str]:
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
