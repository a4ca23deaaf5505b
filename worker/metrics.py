"""Every Prometheus metric the worker exports, named once here (dashboards rely on these names).

Labels stay low-cardinality: tenant, stage, outcome, operation, code, topic and partition,
a pause reason. Never a payment id, never a token.

Gauges that describe a state (lag, parked rejections, snapshot age, readiness) are
refreshed every few seconds by `worker/pipeline/observer.py`; the others change as things
happen. The dashboards (`deploy/grafana/dashboards.py`) and the alert rules
(`deploy/prometheus/alerts.yml`) use these names; `tests/deploy/test_dashboards.py` and
`tests/deploy/test_alerts.py` keep them from drifting apart.
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
    "Time to evaluate one payment against its register snapshot (the pure core); one "
    "evaluation in 16 is timed.",
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
PARTITION_PAUSED = Gauge(
    "flyt_partition_paused",
    "1 while this worker has paused fetching an input partition because too many of its "
    "records wait undone (backpressure: a paused tenant holds its records).",
    ["topic", "partition"],
)
INPUT_OFFSETS_LOST = Counter(
    "flyt_input_offsets_lost_total",
    "Input records the broker deleted (retention) before the worker processed them: found "
    "when a partition's committed offset, or a paused or lagging partition's position, is "
    "below its first offset. Never a silent reset; the log line input_offsets_lost names them.",
    ["topic", "partition"],
)
REBALANCES = Counter(
    "flyt_rebalances_total",
    "Partition hand-overs this worker took part in, by what it did: revoked or assigned.",
    ["action"],
)
POST_HELD = Gauge(
    "flyt_post_held_payments",
    "Payments the post stage holds with no outcome yet, per tenant: sent with an unknown "
    "outcome and settling before their lookup, or Xledger not answering lookups. They may "
    "be in Xledger, so they are never dead-lettered (R14); they are looked up again.",
    ["tenant"],
)
DEAD_LETTERS = Counter(
    "flyt_dead_letters_total",
    "Records sent to the dead-letter queue, by stage and reason.",
    ["stage", "reason"],
)
DLQ_RECORDS = Gauge(
    "flyt_dlq_records",
    "Dead letters the DLQ holds now that no one has replayed, per reason "
    "(worker/dead_letter_gauges.py; every worker reports the whole topic: take the max).",
    ["reason"],
)
DLQ_OLDEST_AGE_SECONDS = Gauge(
    "flyt_dlq_oldest_age_seconds",
    "Age of the oldest dead letter the DLQ holds that no one has replayed, per reason (0 "
    "when none): retention deletes it at FLYT_RETENTION_DAYS (30 days).",
    ["reason"],
)
REEVALUATIONS = Counter(
    "flyt_reevaluations_total",
    "Rejected payments evaluated again after a newer snapshot (R16), by result.",
    ["tenant", "result"],
)
REJECTIONS = Counter(
    "flyt_rejections_total",
    "Rejections sent by the enrich stage (re-evaluations that still reject included), by "
    "tenant and first problem code (UNKNOWN_TENANT: no valid register snapshot).",
    ["tenant", "reason"],
)
REJECTIONS_PARKED = Gauge(
    "flyt_rejections_parked",
    "Rejected payments waiting for a newer register snapshot to be evaluated again (R16), "
    "per tenant, in the partitions this worker holds (with standbys: take the max).",
    ["tenant"],
)
SNAPSHOT_AGE_SECONDS = Gauge(
    "flyt_register_snapshot_age_seconds",
    "Seconds since the register snapshot in force was published, per tenant.",
    ["tenant"],
)
CONSUMER_LAG_RECORDS = Gauge(
    "flyt_consumer_lag_records",
    "Records not yet committed by the worker group, per consumed topic and partition (the "
    "group's view: every worker reports every partition; take the max).",
    ["topic", "partition"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "flyt_consumer_lag_seconds",
    "Age of the oldest record the worker group has not committed, per topic and partition "
    "(0 when nothing waits).",
    ["topic", "partition"],
)
WORKER_READY = Gauge(
    "flyt_worker_ready",
    "1 while this worker would answer /ready with 200: register cache caught up, partitions "
    "assigned, stream processor running.",
)
EVENT_LOOP_LAG_SECONDS = Gauge(
    "flyt_event_loop_lag_seconds",
    "How late the worker's event loop ran its last heartbeat (a wedged loop makes /healthz fail).",
)
BETALT_TO_RECEIPT_SECONDS = Histogram(
    "flyt_betalt_to_receipt_seconds",
    "From reading a Betalt event to holding its Xledger receipt.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)

BUILD_INFO = Gauge(
    "flyt_build_info",
    "Always 1: the worker's version and the commit it was built from (`--version`).",
    ["version", "commit"],
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
    "Payments handled by the Xledger client, by result: posted, already_present, refused, "
    "failed, unknown_outcome (their mutation's outcome is unknown: held for the settle time, "
    "then looked up), unresolved (held: they may be in Xledger and could not be looked up).",
    ["tenant", "result"],
)
XLEDGER_DUPLICATES_DETECTED = Counter(
    "xledger_duplicates_detected_total",
    "Payments a lookup found in Xledger more than once (a double voucher, R18), per tenant; "
    "counted at each lookup that sees one.",
    ["tenant"],
)
XLEDGER_RETRIES = Counter(
    "xledger_retries_total", "Retries of Xledger requests, by reason.", ["tenant", "reason"]
)
XLEDGER_RATE_LIMIT_WAIT_SECONDS = Counter(
    "xledger_rate_limit_wait_seconds_total",
    "Seconds spent waiting for Xledger's limits (own pacing and Xledger's limit errors).",
    ["tenant", "cause"],
)
# Why a tenant's posting is paused: Xledger reported insufficient credits, or its token
# was refused (a person must renew it). One series per (tenant, reason), 0 or 1.
PAUSED_CREDITS = "credits"
PAUSED_TOKEN = "token"
PAUSED_MANUAL = "manual"  # `worker tenant pause` (the control topic): every worker reports it
XLEDGER_TENANT_PAUSED = Gauge(
    "xledger_tenant_paused",
    "1 while a tenant's posting is paused, by reason: credits (Xledger reported insufficient "
    "credits; resumes by itself), token (Xledger refused the token; needs a new one) or "
    "manual (paused by hand with `worker tenant pause`; until `worker tenant resume`).",
    ["tenant", "reason"],
)
TENANT_PAUSED_SINCE = Gauge(
    "flyt_tenant_paused_since_timestamp_seconds",
    "When a tenant was paused by hand (`worker tenant pause`), Unix time, from the control "
    "topic every worker reads; no series once it is resumed.",
    ["tenant"],
)
XLEDGER_BATCH_PAYMENTS = Histogram(
    "xledger_batch_payments",
    "Payments per addGLImportItems request.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250),
)

# --- `worker reconcile` (a CronJob: it serves these, and only these, for a few minutes
# after each run, so that Prometheus scrapes its result) -----------------------------------
RECONCILE_PAYMENTS = Gauge(
    "flyt_reconcile_payments",
    "Betalt payments of the last reconcile run, per tenant and finding: posted_once, "
    "rejected and dead_lettered are clean, every other finding is a difference.",
    ["tenant", "finding"],
)
RECONCILE_LAST_RUN = Gauge(
    "flyt_reconcile_last_run_timestamp_seconds",
    "When the last reconcile run ended (Unix time; 0 in a process that never ran one).",
)
RECONCILE_EXIT_CODE = Gauge(
    "flyt_reconcile_last_run_exit_code",
    "The last reconcile run's exit code: 0 clean, 5 differences found, 1 could not finish.",
)
RECONCILE_METRICS = (
    "flyt_reconcile_payments",
    "flyt_reconcile_last_run_timestamp_seconds",
    "flyt_reconcile_last_run_exit_code",
)
