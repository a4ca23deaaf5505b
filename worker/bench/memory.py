"""What a tenant's registers cost the worker in memory, measured (issue 29).

    python -m worker.bench.memory [--tenants 356] [--top 12] [--distinct]

Loads the bench's tenants' register snapshots (a municipality's size, `data.PADDING`)
into a `RegisterBook` as the register cache does (`apply_snapshot_record`: read from JSON,
offered, the parsed snapshot dropped), under tracemalloc, and prints one JSON line:
- `book_kb_per_tenant`: what the book holds per tenant once loaded;
- `by_site_kb_per_tenant`: that, by the worker's line that allocated it (the innermost
  frame in the worker's code: pydantic's and zlib's work is counted at our call);
- `by_attribute_kb_per_tenant`: that, by what holds it: each `RegisterIndex` slot's
  objects (a slot's share of objects it shares with another slot counts where first met);
- `offer_peak_kb`: the most one offer had allocated at once (the parsed snapshot,
  before the index is built from it);
- `parsed_snapshot_kb`: what a tenant would cost more if its parsed snapshot were kept
  (`RegisterIndex.snapshot`, read back for R13 and the tools).
The bench's tenants are clones: their padded children and groups have the same ids in
every tenant, and pydantic's JSON reader shares equal short strings, so the book's
traced bytes undercount a real municipality's; `--distinct` gives every tenant children
and groups of its own (ids and values), as real registers have. `by_attribute` counts each
tenant's strings as its own either way.
The book is only part of a worker's memory per tenant: `bench --month-start
--tracemalloc` shows what a running worker holds per active tenant.
"""

from __future__ import annotations

import argparse
import enum
import gc
import json
import sys
import tracemalloc
import types
from collections import Counter
from typing import Any

from worker.bench import data
from worker.bench.diagnostics import site_of
from worker.core.register_book import RegisterBook
from worker.core.register_index import RegisterIndex
from worker.core.snapshot_record import Applied, apply_snapshot_record

FRAMES = 25  # deep enough to reach our frame under pydantic's validation
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, enum.Enum)


def register_book_memory(
    tenants: int = data.MUNICIPALITIES, top: int = 12, distinct: bool = False
) -> dict[str, Any]:
    raw = [_snapshot(t, distinct) for t in data.tenant_ids(tenants)]
    gc.collect()
    tracemalloc.start(FRAMES)
    try:
        before = tracemalloc.take_snapshot()
        start, _ = tracemalloc.get_traced_memory()
        book = RegisterBook()
        offer_peak = 0
        for r in raw:
            tracemalloc.reset_peak()
            at, _ = tracemalloc.get_traced_memory()
            # The register cache's own path: read, offer, the parsed snapshot dropped.
            if apply_snapshot_record(book, r).kind is not Applied.ACCEPTED:
                raise RuntimeError("a bench snapshot was refused")  # data.py is wrong
            offer_peak = max(offer_peak, tracemalloc.get_traced_memory()[1] - at)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
        sites: Counter[str] = Counter()
        for diff in tracemalloc.take_snapshot().compare_to(before, "traceback"):
            sites[site_of(diff.traceback)] += diff.size_diff
        parsed = _parsed_snapshot_bytes(book, min(20, tenants))
    finally:
        tracemalloc.stop()
    indexes = [i for t in book.tenants() if (i := book.index(t)) is not None]
    return {
        "tenants": tenants,
        "distinct": distinct,
        "snapshot_json_kb_per_tenant": round(sum(map(len, raw)) / tenants / 1e3, 1),
        "book_mb": round(held / 1e6, 2),
        "book_kb_per_tenant": round(held / tenants / 1e3, 1),
        "by_site_kb_per_tenant": [
            [site, round(b / tenants / 1e3, 1)] for site, b in sites.most_common(top) if b > 0
        ],
        "by_attribute_kb_per_tenant": _by_attribute(indexes),
        "offer_peak_kb": round(offer_peak / 1e3, 1),
        "parsed_snapshot_kb": round(parsed / 1e3, 1),
    }


def _snapshot(tenant: str, distinct: bool) -> bytes:
    snap = data.snapshot_dict(tenant)
    if distinct:  # the clone's own children and groups, as a real municipality has
        reg = snap["registers"]
        for b in reg["barn"]:
            b["child_id"] = f"{b['child_id']}-{tenant}"
            b["value"] = f"{b['value']}-{tenant}"
        for g in reg["grupper"]:
            g["group_id"] = f"{g['group_id']}-{tenant}"
            g["value"] = f"{g['value']}-{tenant}"
    return json.dumps(snap, ensure_ascii=False).encode()


def _parsed_snapshot_bytes(book: RegisterBook, n: int) -> float:
    """The mean traced bytes of a tenant's snapshot read back whole (what `.snapshot`
    keeps once touched), over n tenants; none is kept."""
    sizes = []
    for tenant in book.tenants()[:n]:
        index = book.index(tenant)
        assert index is not None
        at, _ = tracemalloc.get_traced_memory()
        snapshot = index.read_snapshot()
        sizes.append(tracemalloc.get_traced_memory()[0] - at)
        del snapshot
    return sum(sizes) / len(sizes) if sizes else 0.0


def _by_attribute(indexes: list[RegisterIndex]) -> dict[str, float]:
    totals: Counter[str] = Counter()
    for index in indexes:
        seen: set[int] = set()
        totals["(the index object)"] += sys.getsizeof(index)
        for slot in RegisterIndex.__slots__:
            totals[slot] += deep_size(getattr(index, slot, None), seen)
    n = len(indexes) or 1
    return {k: round(v / n / 1e3, 2) for k, v in totals.most_common()}


def deep_size(obj: object, seen: set[int]) -> int:
    """Bytes of `obj` and all it refers to (containers, slots, attributes, pydantic
    models' fields), each object once per `seen`; classes, modules, functions and enum
    members are shared by every tenant and not counted."""
    if id(obj) in seen or isinstance(obj, _SHARED):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        return size + sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    if isinstance(obj, list | tuple | set | frozenset):
        return size + sum(deep_size(x, seen) for x in obj)
    if isinstance(obj, str | bytes | int | float | bool) or obj is None:
        return size
    for slot in getattr(type(obj), "__slots__", ()):
        size += deep_size(getattr(obj, slot, None), seen)
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        size += deep_size(attrs, seen)
    return size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=data.MUNICIPALITIES)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument(
        "--distinct", action="store_true", help="every tenant its own children and groups"
    )
    args = parser.parse_args(argv)
    figures = register_book_memory(args.tenants, args.top, args.distinct)
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
