"""The GraphQL documents that read an Xledger entity's setup, and their answers read into
plain nodes. No I/O here: `entity_setup.py` sends them.

From xledger.md, "Reading the entity's setup". Seen in public client code: the root fields
(`accounts`, `objectKinds`, `objectValues`, `projects`, `entityBankAccounts`, `currencies`,
`entities`), Relay paging (`first`/`after`, `edges { cursor node }`,
`pageInfo { hasNextPage }`), aliased root fields in one document, the `objectKindDbId`
filter, and the node fields asked below, `glSetupEntries { fieldObject { objectKind {
dbId name } } }` (a plain list) included. Inferred: `glSetupEntries { field { name } }`
(which field an entry is about), the types of `posting`/`allowPosting` and of the dates,
and a bank account's `account { dbId }` being the GL account it is linked to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Records per list per page, and lists per document: 5 × 1 000 keeps a request within
# Xledger's 10 000 records per query. A municipality's chart of accounts, its object
# values and projects are a few thousand records at most: one or two pages each.
PAGE_SIZE = 1_000
MAX_LISTS_PER_DOCUMENT = 5

CURRENCIES = "currencies"
ACCOUNTS = "accounts"
OBJECT_KINDS = "objectKinds"
BANK_ACCOUNTS = "entityBankAccounts"
PROJECTS = "projects"
OBJECT_VALUES = "objectValues"
ENTITIES = "entities"

# What is asked of each node: what the checks need, and no more (Xledger charges per MB
# downloaded too).
NODE_FIELDS = {
    CURRENCIES: "dbId code description",
    ACCOUNTS: "dbId code description posting",
    OBJECT_KINDS: "dbId name",
    BANK_ACCOUNTS: "dbId code description accountNumber account { dbId }",
    PROJECTS: "dbId code description allowPosting fromDate toDate",
    OBJECT_VALUES: "dbId code description posting dateFrom dateTo",
    ENTITIES: "dbId description glSetupEntries { field { name } fieldObject { objectKind "
    "{ dbId name } } }",
}


@dataclass(frozen=True, slots=True)
class ListRead:
    """One list to read: a root field under an alias (so one document can ask for several
    object kinds' values), with the object kind for `objectValues`."""

    alias: str
    root: str
    kind_db_id: int | None = None

    def __post_init__(self) -> None:
        if (self.root == OBJECT_VALUES) != (self.kind_db_id is not None):
            raise ValueError("an object kind goes with objectValues, and only with it")


def values_read(kind_db_id: int) -> ListRead:
    return ListRead(f"k{kind_db_id}", OBJECT_VALUES, kind_db_id)


def setup_document(reads: Sequence[ListRead]) -> str:
    """One query asking each list for a page; a list's `after` and object kind are
    variables named for its alias."""
    params = ["$first: Int!"]
    fields = []
    for r in reads:
        params.append(f"$after_{r.alias}: String")
        args = f"first: $first, after: $after_{r.alias}"
        if r.kind_db_id is not None:
            params.append(f"$kind_{r.alias}: Int!")
            args += f", filter: {{ objectKindDbId: $kind_{r.alias} }}"
        fields.append(
            f"  {r.alias}: {r.root}({args}) {{\n"
            f"    edges {{ cursor node {{ {NODE_FIELDS[r.root]} }} }}\n"
            "    pageInfo { hasNextPage }\n  }"
        )
    return f"query ReadEntitySetup({', '.join(params)}) {{\n" + "\n".join(fields) + "\n}"


def setup_variables(
    reads: Sequence[ListRead], after: Mapping[str, str | None], page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    out: dict[str, Any] = {"first": page_size}
    for r in reads:
        out[f"after_{r.alias}"] = after.get(r.alias)
        if r.kind_db_id is not None:
            out[f"kind_{r.alias}"] = r.kind_db_id
    return out


class UnreadableAnswer(Exception):
    """Xledger's answer does not have the shape asked for: nothing in it is trusted."""


@dataclass(frozen=True, slots=True)
class SetupPage:
    nodes: dict[str, list[dict[str, Any]]]  # alias → this page's nodes
    after: dict[str, str]  # alias → the cursor of its next page; only lists that have one


def read_page(data: Mapping[str, Any], reads: Sequence[ListRead]) -> SetupPage:
    nodes: dict[str, list[dict[str, Any]]] = {}
    after: dict[str, str] = {}
    for r in reads:
        conn = data.get(r.alias)
        if conn is None:  # nothing to show
            nodes[r.alias] = []
            continue
        if not isinstance(conn, dict):
            raise UnreadableAnswer(f"{r.root} is not a connection")
        edges = conn.get("edges") or []  # Xledger answers `edges: null` when none match
        if not isinstance(edges, list):
            raise UnreadableAnswer(f"{r.root}.edges is not a list")
        page = []
        for edge in edges:
            node = edge.get("node") if isinstance(edge, dict) else None
            if not isinstance(node, dict) or not isinstance(node.get("dbId"), int):
                raise UnreadableAnswer(f"a {r.root} edge without a node and its dbId")
            page.append(node)
        nodes[r.alias] = page
        if (conn.get("pageInfo") or {}).get("hasNextPage") and edges:
            cursor = edges[-1].get("cursor")
            if not isinstance(cursor, str) or not cursor:
                raise UnreadableAnswer(f"{r.root} has a next page but no cursor")
            after[r.alias] = cursor
    return SetupPage(nodes, after)
