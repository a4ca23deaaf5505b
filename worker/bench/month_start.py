"""`bench --month-start`: the day foster-care fees are paid (issues 20 and 29).

All events Betalt (the month's fees), published at once over many tenants, with all 356
tenants' registers loaded. Each point is a fresh worker; the points grow the events
(10,000 → 50,000) and the tenants (20 → 356), so the summary says how each figure grows
with each. Per point:
- the two-hop anchor over the point's very events, just before its worker
  (`anchor.two_hop`: consume → produce → consume → produce, plain aiokafka, the engine's
  batch size): the whole worker's CPU per event is set beside it (`cpu_ratio_two_hop`,
  issue 29's target ≤ 2.0);
- the whole worker: from the first and from the last Betalt event to the last outcome,
  Xledger requests per posted payment beside the floor (one lookup and one mutation per
  tenant: 2 × tenants / payments), the worker's peak RSS and CPU per event, Betalt →
  receipt.
At the largest point also the stricter enrich anchor, as the quick bench has it: the
one-hop anchor with the engine's batches and the enrich stage alone (a worker with
FLYT_STAGES=enrich) over the same events (`enrich_anchor`: `ratio_engine_batches`,
`cpu_ratio_engine_batches`). `targets` checks issue 29's targets on the figures measured.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from worker.bench import data
from worker.bench.diagnostics import NONE, Diagnostics, per_tenant
from worker.bench.watch import per_second
from worker.bench.worker_runs import enrich_run, worker_run
from worker.bench.world import (
    DEFAULT_WINDOW_S,
    Bench,
    Say,
    broker,
    interrupts_as_keyboard,
    load,
    say_stderr,
    world,
)
from worker.devenv.feed import event_records

RATE_BIN_S = 1.0

# Issue 29's targets at the largest point (50,000 events over 356 tenants).
REQUESTS_PER_PAYMENT_MAX = 0.02
RSS_MB_MAX = 250.0
AFTER_LAST_EVENT_S_MAX = 20.0
CPU_RATIO_TWO_HOP_MAX = 2.0
RSS_FLAT = 0.10  # from the fewest to the most tenants at the most events: within ±10 %


@dataclass(frozen=True)
class MonthStartPlan:
    # (events, tenants) per point: along the events at 356 tenants, along the tenants at
    # 50,000 events.
    points: tuple[tuple[int, int], ...] = (
        (10_000, 356),
        (25_000, 356),
        (50_000, 356),
        (50_000, 20),
        (50_000, 100),
        (10_000, 20),
    )
    sandbox_latency_s: float = 0.05
    registered_tenants: int = data.MUNICIPALITIES
    enrich_anchor: bool = True  # the stricter anchor at the largest point


MONTH_START = MonthStartPlan()
MONTH_START_QUICK = MonthStartPlan(
    points=((10_000, 20), (10_000, 356), (50_000, 20), (50_000, 356))
)
MONTH_START_TINY = MonthStartPlan(points=((200, 4), (400, 4), (400, 2)), registered_tenants=6)


def fees(tenants: list[str], n: int, seed: int) -> list[dict[str, Any]]:
    """n events over `tenants`, every one Betalt (Flyt's re-sends stay, as duplicates)."""
    return [{**e, "status": "Betalt"} for e in data.events_for(tenants, n, seed=seed)]


def largest(points: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The point the targets are for: the most events, then the most tenants."""
    return max(points)


def largest_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of the point the targets are for (`largest`)."""
    n, t = largest(tuple((r["events"], r["tenants"]) for r in rows))
    return next(r for r in rows if (r["events"], r["tenants"]) == (n, t))


def run_month_start(
    plan: MonthStartPlan,
    broker_kind: str,
    say: Say = say_stderr,
    series: dict[str, Any] | None = None,
    diagnostics: Diagnostics = NONE,
) -> dict[str, Any]:
    load_start = load()
    started = time.monotonic()
    out = series if series is not None else {}
    with interrupts_as_keyboard(), broker(broker_kind, say) as bootstrap:
        points, enrich = asyncio.run(_points(plan, bootstrap, say, out, diagnostics))
    summary: dict[str, Any] = {
        "plan": "month-start",
        "broker": broker_kind,
        "month_start": points,
        "growth": growth(points),
        "targets": targets(points),
    }
    if enrich is not None:
        summary["enrich_anchor"] = enrich
        budget = cpu_budget(points, enrich)
        if budget is not None:
            summary["cpu_budget"] = budget
    memory = _per_tenant_memory(points)
    if memory is not None:
        summary["tracemalloc_per_tenant_kb"] = memory
    for row in points:  # every site's bytes go to the series, not the summary line
        for traced in row.get("diagnostics", {}).get("tracemalloc", []):
            sites = traced.pop("sites_bytes", None)
            if sites is not None:
                out.setdefault("tracemalloc_sites_bytes", {})[
                    f"{row['events']}-{row['tenants']}"
                ] = sites
    summary |= {
        "setup": {
            "registered_tenants": plan.registered_tenants,
            "sandbox_latency_ms": round(plan.sandbox_latency_s * 1000),
            "window_s": DEFAULT_WINDOW_S,
            "py_spy": diagnostics.py_spy,  # a profiled point's figures are not the worker's
            "tracemalloc": diagnostics.tracemalloc,  # nor are any of a traced run's
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "loadavg_start": load_start,
        "loadavg_end": load(),
    }
    return summary


async def _points(
    plan: MonthStartPlan,
    bootstrap: str,
    say: Say,
    series: dict[str, Any],
    diagnostics: Diagnostics,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    rows = []
    enrich: dict[str, Any] | None = None
    top = largest(plan.points)
    series.update({"rate_bin_s": RATE_BIN_S, "receipts_per_s": {}})
    async with world(
        bootstrap, plan.registered_tenants, plan.sandbox_latency_s, say, diagnostics=diagnostics
    ) as bench:
        for i, (n, t) in enumerate(plan.points):
            events = fees(data.tenant_ids(t), n, seed=301 + i)
            load_before = load()[0]
            # The anchor first, over the same events, while no worker runs.
            hop = await bench.two_hop(f"month-{n}-{t}", event_records(events))
            say(f"two-hop anchor, {n} events: {hop}")
            r = await worker_run(
                bench,
                f"month-{n}-{t}",
                events,
                None,
                DEFAULT_WINDOW_S,
                profile=(n, t) == top,
                incomplete_ok=True,  # a point that does not finish is a figure too
            )
            row = point_row(n, t, r.figures, hop)
            row["loadavg_1m"] = [load_before, load()[0]]
            if "incomplete" in r.figures:
                row["incomplete"] = r.figures["incomplete"]
            if r.diagnostics:
                row["diagnostics"] = r.diagnostics
            series["receipts_per_s"][f"{n:,} events, {t} tenants"] = per_second(
                r.receipt_ms, RATE_BIN_S
            )
            say(f"month start, {n} events over {t} tenants: {_brief(row)}")
            rows.append(row)
            if plan.enrich_anchor and (n, t) == top:
                enrich = await _enrich_anchor(bench, events, f"{n}-{t}", say)
    return rows, enrich


def point_row(n: int, t: int, f: dict[str, Any], hop: dict[str, Any]) -> dict[str, Any]:
    """One point's figures, the whole worker's beside its floor and its anchor."""
    posted = f["posted"]
    cpu = f["worker_cpu_us_per_event"]
    return {
        "events": n,
        "tenants": t,
        "to_last_outcome_s": f["to_last_outcome_s"],  # from the first event (issue 20's)
        "last_outcome_after_last_event_s": f["last_outcome_after_last_event_s"],
        "requests_per_payment": f["requests_per_payment"],
        "requests_floor_per_payment": round(2 * t / posted, 4) if posted else None,
        "requests": f["requests"],
        "requests_per_tenant": round(f["requests"] / t, 2),
        "lookups": f["lookups"],
        "mutations": f["mutations"],
        "burst_errors": f["burst_errors"],
        "worker_rss_mb": f["worker_rss_mb"],
        "worker_cpu_us_per_event": cpu,
        "two_hop_anchor_cpu_us_per_event": hop["cpu_us_per_event"],
        "two_hop_anchor_events_per_s": hop["events_per_s"],
        "cpu_ratio_two_hop": (
            round(cpu / hop["cpu_us_per_event"], 2) if hop["cpu_us_per_event"] else None
        ),
        "enrich_events_per_s": f["enrich_events_per_s"],
        "p50_ms": f["p50_ms"],
        "p99_ms": f["p99_ms"],
        "posted": posted,
        "rejected": f["rejected"],
    }


async def _enrich_anchor(
    bench: Bench, events: list[dict[str, Any]], tag: str, say: Say
) -> dict[str, Any]:
    """The stricter anchor as the quick bench has it: the one-hop anchor with the engine's
    batches and the enrich stage alone, over the same events."""
    rate, cpu, _ = await bench.passthrough(
        event_records(events), engine_batches=True, tag=f"month-{tag}."
    )
    e = (await enrich_run(bench, f"month-enrich-{tag}", events)).figures
    out = {
        "events": len(events),
        "passthrough_engine_batches_events_per_s": round(rate),
        "passthrough_engine_batches_cpu_us_per_event": round(cpu),
        "enrich_events_per_s": e["events_per_s"],
        "enrich_cpu_us_per_event": e["cpu_us_per_event"],
        "ratio_engine_batches": round(e["events_per_s"] / rate, 3) if rate else None,
        "cpu_ratio_engine_batches": (
            round(cpu / e["cpu_us_per_event"], 3) if e["cpu_us_per_event"] else None
        ),
        "loadavg_1m": load()[0],
    }
    say(f"enrich anchor, {len(events)} events: {out}")
    return out


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How each figure grows: from the fewest to the most events at the most tenants, and
    from the fewest to the most tenants at the most events (a ratio per figure)."""
    figures = (
        "to_last_outcome_s",
        "last_outcome_after_last_event_s",
        "requests_per_payment",
        "requests_per_tenant",
        "worker_rss_mb",
        "worker_cpu_us_per_event",
    )

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {
            "from": {"events": a["events"], "tenants": a["tenants"]},
            "to": {"events": b["events"], "tenants": b["tenants"]},
            **{k: round(b[k] / a[k], 2) if a.get(k) and b.get(k) else None for k in figures},
        }

    out: dict[str, Any] = {}
    most_tenants = max(r["tenants"] for r in rows)
    most_events = max(r["events"] for r in rows)
    along_events = sorted((r for r in rows if r["tenants"] == most_tenants), key=_events)
    along_tenants = sorted((r for r in rows if r["events"] == most_events), key=_tenants)
    if len(along_events) > 1:
        out["events"] = ratio(along_events[0], along_events[-1])
    if len(along_tenants) > 1:
        out["tenants"] = ratio(along_tenants[0], along_tenants[-1])
        rss = out["tenants"]["worker_rss_mb"]
        out["tenants"]["rss_flat_within_10pct"] = (
            abs(rss - 1) <= RSS_FLAT if rss is not None else None
        )
        out["tenants"]["rss_mb"] = [
            along_tenants[0]["worker_rss_mb"],
            along_tenants[-1]["worker_rss_mb"],
        ]
    return out


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 29's targets against the largest point's figures: each a [figure, limit, met]."""
    row = largest_row(rows)
    n, t = row["events"], row["tenants"]

    def check(figure: float | None, limit: float) -> list[Any]:
        return [figure, limit, figure is not None and figure <= limit]

    out: dict[str, Any] = {
        "at": {"events": n, "tenants": t},
        "requests_per_payment": check(row["requests_per_payment"], REQUESTS_PER_PAYMENT_MAX),
        "requests_floor_per_payment": row["requests_floor_per_payment"],
        "worker_rss_mb": check(row["worker_rss_mb"], RSS_MB_MAX),
        "last_outcome_after_last_event_s": check(
            row["last_outcome_after_last_event_s"], AFTER_LAST_EVENT_S_MAX
        ),
        "cpu_ratio_two_hop": check(row["cpu_ratio_two_hop"], CPU_RATIO_TWO_HOP_MAX),
        "burst_errors": row["burst_errors"],
    }
    flat = growth(rows).get("tenants", {}).get("rss_flat_within_10pct")
    if flat is not None:
        out["rss_flat_20_to_356_tenants"] = flat
    return out


def cpu_budget(rows: list[dict[str, Any]], enrich: dict[str, Any]) -> dict[str, Any] | None:
    """Where the CPU limit goes at the largest point (µs per event): the limit (2 × the
    two-hop anchor), what the enrich stage alone spends of it over the very events (the
    stricter anchor's run), and how much cheaper the rest of the worker (posting: its
    reads, the Xledger client, its outcomes) would have to be to fit what is left."""
    row = largest_row(rows)
    n, t = row["events"], row["tenants"]
    anchor, worker = row["two_hop_anchor_cpu_us_per_event"], row["worker_cpu_us_per_event"]
    alone = enrich.get("enrich_cpu_us_per_event")
    if not anchor or not worker or not alone or enrich.get("events") != n:
        return None
    limit = CPU_RATIO_TWO_HOP_MAX * anchor
    rest, room = worker - alone, limit - alone
    return {
        "at": {"events": n, "tenants": t},
        "limit_us": round(limit),
        "worker_us": worker,
        "enrich_stage_alone_us": alone,
        "enrich_share_of_limit": round(alone / limit, 2),
        "rest_us": rest,
        "rest_limit_us": round(room),
        # How many times cheaper the rest must become (None: the enrich stage alone is
        # already over the limit).
        "rest_cut_needed": round(rest / room, 2) if room > 0 else None,
    }


def _per_tenant_memory(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Under --tracemalloc: what grew per added tenant between the ends of the tenant
    axis (same events), by the worker's own allocating frame."""
    most_events = max(r["events"] for r in rows)
    line = sorted((r for r in rows if r["events"] == most_events), key=_tenants)
    traced = [r for r in line if r.get("diagnostics", {}).get("tracemalloc")]
    if len(traced) < 2:
        return None
    few, many = traced[0], traced[-1]
    a, b = few["diagnostics"]["tracemalloc"][0], many["diagnostics"]["tracemalloc"][0]
    if "sites_bytes" not in a or "sites_bytes" not in b:
        return None
    return {
        "from_tenants": few["tenants"],
        "to_tenants": many["tenants"],
        "events": most_events,
        "traced_mb": [a["traced_mb"], b["traced_mb"]],
        "kb_per_added_tenant_by_site": per_tenant(a, b, (few["tenants"], many["tenants"])),
    }


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    """The row for progress lines: without the diagnostics' long lists."""
    return {k: v for k, v in row.items() if k != "diagnostics"}


def _events(row: dict[str, Any]) -> int:
    return int(row["events"])


def _tenants(row: dict[str, Any]) -> int:
    return int(row["tenants"])
