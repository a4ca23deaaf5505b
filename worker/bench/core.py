"""How long the pure core takes per payment, on one core, with no I/O.

Events are parsed up front (parsing is the adapter's cost, reported on its own); the timed
loop is `evaluate(event, index)` only. Both are CPU time (this process's), best of three:
the figures are the code's, not the machine's noise or its other processes'.
Usage: python -m worker.bench.core [N]
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from worker.bench.data import events_for, snapshot_dict, tenant_ids
from worker.contracts import PaymentStatusEvent, RegisterSnapshot, Status
from worker.contracts.reading import read_event
from worker.core import evaluate
from worker.core.register_book import RegisterBook


def core_figures(n: int = 100_000, tenants: int = 20) -> dict[str, Any]:
    book = RegisterBook()
    ids = tenant_ids(tenants)
    for t in ids:  # registers of a municipality's size (data.PADDING)
        book.offer(RegisterSnapshot.model_validate(snapshot_dict(t)))
    raw = [
        json.dumps(e).encode() for e in events_for(ids, n, seed=11) if e["status"] == Status.BETALT
    ]
    events = [read_event(r) for r in raw]  # the enrich stage's own reader
    parse_s = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for r in raw:
            read_event(r)
        parse_s = min(parse_s, time.process_time() - t0)
    parsed = [e for e in events if isinstance(e, PaymentStatusEvent)]
    indexes = [book.index(e.tenant_id) for e in parsed]
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for e, ix in zip(parsed, indexes, strict=True):
            evaluate(e, ix)
        best = min(best, time.process_time() - t0)
    return {
        "payments": len(parsed),
        "core_us_per_event": round(best / len(parsed) * 1e6, 2),
        "parse_us_per_event": round(parse_s / len(raw) * 1e6, 2),
    }


if __name__ == "__main__":
    print(json.dumps(core_figures(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
