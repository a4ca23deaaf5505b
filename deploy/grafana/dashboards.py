"""The worker's Grafana dashboards as code (Grafana's grafana-foundation-sdk builders).

    .venv/bin/python deploy/grafana/dashboards.py   # rewrites deploy/grafana/dashboards/*.json

Two dashboards: the overview (is the flow healthy, and if not, where does it stop?) and
a per-tenant drill-down (what is wrong for this one municipality?). Each panel's
description is the question it answers for the person on call. The JSON is committed
(Grafana provisions it from deploy/grafana/dashboards/); tests/deploy/test_dashboards.py
regenerates it and fails on any difference, and checks that every metric it queries is
one the worker exports (worker/metrics.py).

Here and not in the `worker` package: the SDK is a development dependency only, and the
worker's image has no use for it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard, QueryVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as StatPanel
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")  # provisioning/datasources
RATE = "$__rate_interval"  # Grafana's window for rate(): at least four scrapes


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    question: str  # what the on-call engineer learns here: the panel's description
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def quantiles(histogram: str, by: str = "") -> tuple[Query, ...]:
    labels = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        q(
            f"histogram_quantile({p}, sum by ({labels}) (rate({histogram}_bucket[{RATE}])))",
            f"p{int(p * 100)}{suffix}",
        )
        for p in (0.5, 0.9, 0.99)
    )


LAG_RECORDS = "max by (topic, partition) (flyt_consumer_lag_records)"  # every worker reports all
PAUSED = "max by (tenant, reason) (xledger_tenant_paused)"

OVERVIEW: dict[str, list[PanelSpec]] = {
    "Flow": [
        PanelSpec(
            "Events by outcome (per s)",
            "Are payments flowing, and how many end submitted, rejected, ignored (not Betalt), "
            "duplicate or invalid?",
            (q(f"sum by (outcome) (rate(flyt_events_total[{RATE}]))", "{{outcome}}"),),
            "ops",
        ),
        PanelSpec(
            "Betalt → receipt latency",
            "How long does a Betalt payment take to reach Xledger and come back as a receipt "
            "(p50, p90, p99)?",
            quantiles("flyt_betalt_to_receipt_seconds"),
            "s",
        ),
        PanelSpec(
            "Consumer lag (records)",
            "How many records wait for the worker, per input topic? Rising while input is "
            "steady means the worker falls behind.",
            (q(f"sum by (topic) ({LAG_RECORDS})", "{{topic}}"),),
        ),
        PanelSpec(
            "Oldest unprocessed record (age)",
            "How long has the oldest waiting record waited, per topic? This is the delay a "
            "payment sees before it is handled.",
            (q("max by (topic) (flyt_consumer_lag_seconds)", "{{topic}}"),),
            "s",
        ),
        PanelSpec(
            "Workers ready and partitions held",
            "How many workers pass /ready, does each hold input partitions, and which build "
            "do they run (a rollout shows two)?",
            (
                q("sum(flyt_worker_ready)", "ready workers"),
                q("count by (version, commit) (flyt_build_info)", "build {{version}} {{commit}}"),
                q("sum by (instance, topic) (flyt_assigned_partitions)", "{{instance}} {{topic}}"),
            ),
        ),
    ],
    "Outcomes": [
        PanelSpec(
            "Rejections by reason (per s)",
            "Which register problems reject payments right now (UNKNOWN_TENANT: a tenant "
            "without a valid snapshot)?",
            (q(f"sum by (reason) (rate(flyt_rejections_total[{RATE}]))", "{{reason}}"),),
            "ops",
        ),
        PanelSpec(
            "Rejections parked for re-evaluation (R16)",
            "How many rejected payments wait for a newer register snapshot, per tenant? They "
            "post by themselves once finance staff publish the fix.",
            (q("max by (tenant) (flyt_rejections_parked)", "{{tenant}}"),),
        ),
        PanelSpec(
            "Dead letters (15 min)",
            "Is anything landing in the DLQ, at which stage and why? Each one needs a person "
            "(`worker dlq list`).",
            (
                q(
                    "sum by (stage, reason) (increase(flyt_dead_letters_total[15m]))",
                    "{{stage}} {{reason}}",
                ),
            ),
        ),
        PanelSpec(
            "Dead letters held, and the oldest's age",
            "How many dead letters does the DLQ hold per reason, and how old is the oldest? "
            "Retention deletes them at 30 days (FLYT_RETENTION_DAYS): past 15 an alert asks "
            "for them to be replayed or explained (`worker dlq list --reason R`).",
            (
                q("max by (reason) (flyt_dlq_records)", "held: {{reason}}"),
                q(
                    "max by (reason) (flyt_dlq_oldest_age_seconds) / 86400",
                    "oldest (days): {{reason}}",
                ),
            ),
        ),
        PanelSpec(
            "Xledger payments by result (per s)",
            "Does Xledger take the payments: posted, already present (a safe repeat), "
            "refused (content), failed (after retries)?",
            (q(f"sum by (result) (rate(xledger_payments_total[{RATE}]))", "{{result}}"),),
            "ops",
        ),
    ],
    "Xledger": [
        PanelSpec(
            "Xledger requests by operation and result (per s)",
            "Is Xledger answering, and with which errors?",
            (
                q(
                    f"sum by (operation, result) (rate(xledger_requests_total[{RATE}]))",
                    "{{operation}} {{result}}",
                ),
            ),
            "reqps",
        ),
        PanelSpec(
            "Xledger request latency",
            "How fast does Xledger answer lookups and posts (p50, p90, p99)?",
            quantiles("xledger_request_seconds", "operation"),
            "s",
        ),
        PanelSpec(
            "Request economy",
            "How many payments does one request carry, and how many requests does a posted "
            "payment cost? (Credits are paid per request.)",
            (
                q(
                    f"sum(rate(xledger_batch_payments_sum[{RATE}])) / "
                    f"sum(rate(xledger_batch_payments_count[{RATE}]))",
                    "payments per post request",
                ),
                q(
                    f"sum(rate(xledger_requests_total[{RATE}])) / "
                    f'sum(rate(xledger_payments_total{{result="posted"}}[{RATE}]))',
                    "requests per posted payment",
                ),
            ),
        ),
        PanelSpec(
            "Retries and waiting for limits",
            "Is the worker retrying Xledger (why?) or waiting for its rate limits?",
            (
                q(
                    f"sum by (reason) (rate(xledger_retries_total[{RATE}]))",
                    "retries: {{reason}}",
                ),
                q(
                    f"sum by (cause) (rate(xledger_rate_limit_wait_seconds_total[{RATE}]))",
                    "waiting (s/s): {{cause}}",
                ),
            ),
        ),
        PanelSpec(
            "Paused tenants",
            "How many tenants are paused right now (credits used up, token refused, or paused "
            "by hand: `worker status` says who and why)?",
            (q(f"count({PAUSED} == 1) or vector(0)", "paused"),),
            kind="stat",
            width=6,
        ),
        PanelSpec(
            "Paused tenants by reason",
            "Which tenants are paused, since when, and why?",
            (q(PAUSED, "{{tenant}} {{reason}}"),),
            width=18,
        ),
    ],
    "Registers": [
        PanelSpec(
            "Register snapshot age",
            "How old is each tenant's register snapshot in force (since it was published)?",
            (q("max by (tenant) (flyt_register_snapshot_age_seconds)", "{{tenant}}"),),
            "s",
        ),
        PanelSpec(
            "Register snapshots refused (1 h)",
            "Were snapshots refused (R1–R13)? The previous one stays in force; a tenant with "
            "none has its payments rejected as UNKNOWN_TENANT.",
            (
                q(
                    'sum by (tenant) (increase(flyt_register_snapshots_total{result="refused"}'
                    "[1h]))",
                    "{{tenant}}",
                ),
            ),
        ),
    ],
}

T = 'tenant="$tenant"'
TENANT: dict[str, list[PanelSpec]] = {
    "Tenant $tenant": [
        PanelSpec(
            "Paused",
            "Is this tenant's posting paused, and why (credits or token)?",
            (q(f"max by (reason) (xledger_tenant_paused{{{T}}})", "{{reason}}"),),
            kind="stat",
            width=6,
        ),
        PanelSpec(
            "Snapshot version in force",
            "Which register snapshot version does the worker use for this tenant?",
            (q(f"max(flyt_register_snapshot_version{{{T}}})", "version"),),
            kind="stat",
            width=6,
        ),
        PanelSpec(
            "Snapshot age",
            "How long ago was that snapshot published?",
            (q(f"max(flyt_register_snapshot_age_seconds{{{T}}})", "age"),),
            "s",
            kind="stat",
            width=6,
        ),
        PanelSpec(
            "Rejections parked (R16)",
            "How many of this tenant's payments wait for a fixed snapshot?",
            (q(f"max(flyt_rejections_parked{{{T}}})", "parked"),),
            kind="stat",
            width=6,
        ),
        PanelSpec(
            "Rejections by reason (per s)",
            "What makes this tenant's payments rejected: which register gap?",
            (q(f"sum by (reason) (rate(flyt_rejections_total{{{T}}}[{RATE}]))", "{{reason}}"),),
            "ops",
        ),
        PanelSpec(
            "Xledger payments by result (per s)",
            "Are this tenant's payments posted, refused or failing?",
            (
                q(
                    f"sum by (result) (rate(xledger_payments_total{{{T}}}[{RATE}]))",
                    "{{result}}",
                ),
            ),
            "ops",
        ),
        PanelSpec(
            "Xledger requests by operation and result (per s)",
            "What does Xledger answer this tenant's token?",
            (
                q(
                    f"sum by (operation, result) (rate(xledger_requests_total{{{T}}}[{RATE}]))",
                    "{{operation}} {{result}}",
                ),
            ),
            "reqps",
        ),
        PanelSpec(
            "Retries and waiting for limits",
            "Is this tenant's token near Xledger's limits, or are its requests retried?",
            (
                q(
                    f"sum by (reason) (rate(xledger_retries_total{{{T}}}[{RATE}]))",
                    "retries: {{reason}}",
                ),
                q(
                    f"sum by (cause) (rate(xledger_rate_limit_wait_seconds_total{{{T}}}[{RATE}]))",
                    "waiting (s/s): {{cause}}",
                ),
            ),
        ),
        PanelSpec(
            "Re-evaluations after a new snapshot (R16, 1 h)",
            "Did the last snapshot cure the parked rejections?",
            (
                q(
                    f"sum by (result) (increase(flyt_reevaluations_total{{{T}}}[1h]))",
                    "{{result}}",
                ),
            ),
        ),
        PanelSpec(
            "Register snapshots (1 h)",
            "Did finance staff publish snapshots, and were they accepted or refused?",
            (
                q(
                    f"sum by (result) (increase(flyt_register_snapshots_total{{{T}}}[1h]))",
                    "{{result}}",
                ),
            ),
        ),
    ],
}


def _panel(spec: PanelSpec, panel_id: int) -> TimeseriesPanel | StatPanel:
    panel = TimeseriesPanel() if spec.kind == "timeseries" else StatPanel()
    panel = (
        panel.id(panel_id)
        .title(spec.title)
        .description(spec.question)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .height(8 if spec.kind == "timeseries" else 5)
        .span(spec.width)
    )
    if isinstance(panel, TimeseriesPanel):
        panel = panel.min(0)
    for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
        target = Dataquery().ref_id(ref).expr(query.expr).legend_format(query.legend)
        panel = panel.with_target(target.instant() if spec.kind == "stat" else target)
    return panel


def _dashboard(uid: str, title: str, rows: dict[str, list[PanelSpec]]) -> Dashboard:
    board = (
        Dashboard(title)
        .uid(uid)
        .tags(["flyt", "xledger"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
    )
    panel_id = 0
    for row_title, specs in rows.items():
        panel_id += 1
        board = board.with_row(Row(row_title).id(panel_id))
        for spec in specs:
            panel_id += 1
            board = board.with_panel(_panel(spec, panel_id))
    return board


def overview() -> Dashboard:
    return _dashboard("flyt-xledger-overview", "Flyt → Xledger: overview", OVERVIEW)


def tenant() -> Dashboard:
    variable = (
        QueryVariable("tenant")
        .label("Tenant")
        .datasource(DATASOURCE)
        .query("label_values(flyt_register_snapshot_version, tenant)")
    )
    board = _dashboard("flyt-xledger-tenant", "Flyt → Xledger: one tenant", TENANT)
    return board.with_variable(variable)


def rendered() -> dict[str, str]:
    """File name → JSON text, exactly as committed."""
    return {
        f"{name}.json": json.dumps(board().build(), cls=JSONEncoder, indent=2, sort_keys=True)
        + "\n"
        for name, board in (("flyt-xledger-overview", overview), ("flyt-xledger-tenant", tenant))
    }


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
