"""Issue 29's month-start figures: the floor and the anchor beside each point, the targets,
the growth, py-spy's and tracemalloc's summaries, the register book's memory per tenant.
Pure functions on made-up figures (no broker); the tiny runs are in test_plans.py."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from worker.bench.diagnostics import per_tenant, top_frames
from worker.bench.memory import deep_size, register_book_memory
from worker.bench.month_start import cpu_budget, growth, point_row, targets
from worker.cli import main


def _figures(posted: int, requests: int, cpu: int, rss: float) -> dict[str, Any]:
    return {
        "to_last_outcome_s": 30.0,
        "last_outcome_after_last_event_s": 25.0,
        "requests_per_payment": round(requests / posted, 4),
        "requests": requests,
        "lookups": requests // 2,
        "mutations": requests - requests // 2,
        "burst_errors": 0,
        "worker_rss_mb": rss,
        "worker_cpu_us_per_event": cpu,
        "enrich_events_per_s": 2000,
        "p50_ms": 9000,
        "p99_ms": 20000,
        "posted": posted,
        "rejected": 100,
    }


HOP = {"events_per_s": 10_000, "cpu_us_per_event": 100}


def test_a_point_sets_the_requests_beside_their_floor_and_the_cpu_beside_the_anchor() -> None:
    row = point_row(50_000, 356, _figures(47_000, 2_000, 450, 377.0), HOP)
    assert row["requests_floor_per_payment"] == round(2 * 356 / 47_000, 4)
    assert row["requests_per_tenant"] == round(2_000 / 356, 2)
    assert row["cpu_ratio_two_hop"] == 4.5
    assert row["two_hop_anchor_cpu_us_per_event"] == 100


def test_the_targets_are_checked_at_the_largest_point_and_rss_flatness_along_tenants() -> None:
    rows = [
        point_row(10_000, 356, _figures(9_000, 400, 300, 200.0), HOP),
        point_row(50_000, 20, _figures(47_000, 60, 180, 230.0), HOP),
        point_row(50_000, 356, _figures(47_000, 900, 190, 240.0), HOP),
    ]
    t = targets(rows)
    assert t["at"] == {"events": 50_000, "tenants": 356}
    assert t["requests_per_payment"] == [round(900 / 47_000, 4), 0.02, True]
    assert t["worker_rss_mb"] == [240.0, 250.0, True]
    assert t["cpu_ratio_two_hop"] == [1.9, 2.0, True]
    assert t["last_outcome_after_last_event_s"] == [25.0, 20.0, False]
    assert t["rss_flat_20_to_356_tenants"] is True  # 230 → 240 MB: +4 %
    g = growth(rows)
    assert g["tenants"]["rss_mb"] == [230.0, 240.0]
    assert g["events"]["worker_cpu_us_per_event"] == round(190 / 300, 2)


def test_rss_that_grows_with_the_tenants_is_not_flat() -> None:
    rows = [
        point_row(50_000, 20, _figures(47_000, 60, 180, 245.0), HOP),
        point_row(50_000, 356, _figures(47_000, 900, 190, 495.0), HOP),
    ]
    assert growth(rows)["tenants"]["rss_flat_within_10pct"] is False
    assert targets(rows)["worker_rss_mb"][2] is False


def test_py_spy_samples_are_summed_per_frame_itself_per_worker_frame_and_on_the_stack() -> None:
    collapsed = "\n".join(
        [
            "run (worker/commands.py:60);_run (worker/engine/key_loop.py:80);"
            "_send (worker/xledger/client.py:800);pool (httpcore/_async/pool.py:300) 6",
            "run (worker/commands.py:60);_run (worker/engine/key_loop.py:80);"
            "handle (worker/pipeline/enrich_stage.py:40) 3",
            "run (worker/commands.py:60);_run_once (asyncio/base_events.py:1900);"
            "_fetch (aiokafka/consumer/fetcher.py:700) 1",
            "garbage",
        ]
    )
    top = top_frames(collapsed)
    assert top["samples"] == 10
    assert top["top_self_pct"][0] == ["pool (httpcore/_async/pool.py:300)", 60.0]
    owners = dict(map(tuple, top["by_worker_frame_pct"]))
    assert owners["_send (worker/xledger/client.py:800)"] == 60.0
    assert owners["(no worker frame) _fetch (aiokafka/consumer/fetcher.py:700)"] == 10.0
    total = dict(map(tuple, top["top_total_worker_pct"]))
    assert total["_run (worker/engine/key_loop.py:80)"] == 90.0
    assert "run (worker/commands.py:60)" not in total  # the entry is under everything


def test_what_grows_per_added_tenant_is_the_difference_per_site() -> None:
    few = {"sites_bytes": {"a.py:1": 1_000_000, "b.py:2": 500_000}}
    many = {"sites_bytes": {"a.py:1": 1_000_000 + 336 * 2_000, "b.py:2": 400_000, "c.py:3": 336}}
    assert per_tenant(few, many, (20, 356)) == [["a.py:1", 2.0], ["c.py:3", 0.0]]


def test_the_register_book_memory_tool_measures_a_few_tenants() -> None:
    shared = register_book_memory(tenants=6, top=5)
    distinct = register_book_memory(tenants=6, top=5, distinct=True)
    for m in (shared, distinct):
        assert m["book_kb_per_tenant"] > 0 and m["offer_peak_kb"] > 0
        assert m["parsed_snapshot_kb"] > 0
        assert m["by_site_kb_per_tenant"] and m["by_attribute_kb_per_tenant"]["barn"] > 0
    # Each tenant's own children and groups cost more than strings shared by clones.
    assert distinct["book_kb_per_tenant"] > shared["book_kb_per_tenant"]


def test_deep_size_counts_each_object_once_and_not_shared_classes() -> None:
    inner = ["x" * 100]
    seen: set[int] = set()
    first = deep_size({"a": inner, "b": inner}, seen)
    assert first > 100
    assert deep_size(inner, seen) == 0  # already counted
    assert deep_size(int, set()) == 0


def test_profilers_go_with_the_month_start_only() -> None:
    for flag in ("--py-spy", "--tracemalloc"):
        result = CliRunner().invoke(main, ["bench", flag])
        assert result.exit_code == 2 and "--month-start" in result.output, result.output


def test_the_cpu_budget_says_what_the_enrich_stage_alone_leaves_of_the_limit() -> None:
    """Issue 29: at the largest point, the limit (2 × the two-hop anchor) less the enrich
    stage alone over the same events is what posting may cost."""
    rows = [
        point_row(10_000, 356, _figures(9_000, 400, 300, 200.0), HOP),
        point_row(50_000, 356, _figures(47_000, 900, 440, 240.0), HOP),
    ]
    enrich = {"events": 50_000, "enrich_cpu_us_per_event": 110}
    b = cpu_budget(rows, enrich)
    assert b == {
        "at": {"events": 50_000, "tenants": 356},
        "limit_us": 200,
        "worker_us": 440,
        "enrich_stage_alone_us": 110,
        "enrich_share_of_limit": 0.55,
        "rest_us": 330,
        "rest_limit_us": 90,
        "rest_cut_needed": 3.67,
    }
    # An enrich stage alone over the limit leaves posting nothing; another point's enrich
    # run is not this point's.
    assert cpu_budget(rows, {**enrich, "enrich_cpu_us_per_event": 250})["rest_cut_needed"] is None
    assert cpu_budget(rows, {**enrich, "events": 10_000}) is None
