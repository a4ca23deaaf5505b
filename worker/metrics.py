"""Every Prometheus metric the worker exports, named once here (dashboards rely on these names).

Labels stay low-cardinality: tenant, stage, outcome, operation, code. Never a payment id,
never a token.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- the stream ------------------------------------------------------------------------
EVENTS = Counter(
    "flyt_events_total",
    "Payment-status events read, by outcome: submitted, rejected, ignored, duplicate, invalid.",
    ["outcome"],
)
ENRICH_SECONDS = Histogram(
    "flyt_enrich_seconds",
    "Time to evaluate one payment against its register snapshot (the pure core).",
    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2),
)
SNAPSHOTS = Counter(
    "flyt_register_snapshots_total",
    "Register snapshots read, by result: accepted or refused.",
    ["tenant", "result"],
)
SNAPSHOT_VERSION = Gauge(
    "flyt_register_snapshot_version", "Register snapshot version in force, per tenant.", ["tenant"]
)
ASSIGNED_PARTITIONS = Gauge(
    "flyt_assigned_partitions",
    "Partitions of each consumed topic assigned to this worker (after the last rebalance).",
    ["topic"],
)
DEAD_LETTERS = Counter(
    "flyt_dead_letters_total",
    "Records sent to the dead-letter queue, by stage and reason.",
    ["stage", "reason"],
)
REEVALUATIONS = Counter(
    "flyt_reevaluations_total",
    "Rejected payments evaluated again after a newer snapshot (R16), by result.",
    ["tenant", "result"],
)
BETALT_TO_RECEIPT_SECONDS = Histogram(
    "flyt_betalt_to_receipt_seconds",
    "From reading a Betalt event to holding its Xledger receipt.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)

# --- Xledger ----------------------------------------------------------------------------
XLEDGER_REQUESTS = Counter(
    "xledger_requests_total",
    "HTTP requests sent to Xledger, by operation (lookup, post) and result (ok or error code).",
    ["tenant", "operation", "result"],
)
XLEDGER_REQUEST_SECONDS = Histogram(
    "xledger_request_seconds",
    "Xledger request latency.",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
XLEDGER_PAYMENTS = Counter(
    "xledger_payments_total",
    "Payments handled by the Xledger client, by result: posted, already_present, refused, failed.",
    ["tenant", "result"],
)
XLEDGER_RETRIES = Counter(
    "xledger_retries_total", "Retries of Xledger requests, by reason.", ["tenant", "reason"]
)
XLEDGER_RATE_LIMIT_WAIT_SECONDS = Counter(
    "xledger_rate_limit_wait_seconds_total",
    "Seconds spent waiting for Xledger's limits (own pacing and Xledger's limit errors).",
    ["tenant", "cause"],
)
XLEDGER_TENANT_PAUSED = Gauge(
    "xledger_tenant_paused",
    "1 while a tenant's posting is paused because Xledger reported insufficient credits.",
    ["tenant"],
)
XLEDGER_BATCH_PAYMENTS = Histogram(
    "xledger_batch_payments",
    "Payments per addGLImportItems request.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250),
)
