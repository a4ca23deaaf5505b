"""Worker settings, from environment variables (`FLYT_…`) with defaults for the embedded mode."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Topics:
    payments: str = "flyt.payment-status.v1"
    registers: str = "flyt.registers.v1"
    submissions: str = "xledger.submissions.v1"
    receipts: str = "xledger.receipts.v1"
    rejections: str = "flyt.payment-rejections.v1"
    dlq: str = "xledger.dlq.v1"
    # Who replayed or resent what, and what came of it (worker/ops/audit.py).
    audit: str = "flyt.xledger.audit.v1"
    control: str = "flyt.xledger.tenant-control.v1"  # tenants paused by hand (compacted)


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of this process authenticates (`worker/kafka_clients.py`
    turns it into client settings). Secrets are never values here, only the files that hold
    them: they are read when a client is built, so a rotated secret is picked up."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_SSL or SASL_PLAINTEXT
    ssl_ca_file: Path | None = None  # PEM; None: the system's CAs
    ssl_cert_file: Path | None = None  # PEM client certificate (mutual TLS) ...
    ssl_key_file: Path | None = None  # ... and its private key
    ssl_key_password_file: Path | None = None  # for an encrypted private key
    ssl_check_hostname: bool = True  # Kafka's ssl.endpoint.identification.algorithm=https
    sasl_mechanism: str = "SCRAM-SHA-512"  # SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN
    sasl_username_file: Path | None = None
    sasl_password_file: Path | None = None
    # A client properties file (`--command-config`) whose sasl.jaas.config holds the
    # user and password, as Kafka's own tools take them: read when a client is built.
    sasl_jaas_file: Path | None = None


@dataclass(frozen=True)
class Settings:
    bootstrap: str | None = None  # None: the embedded broker
    kafka: KafkaSecurity = field(default_factory=KafkaSecurity)
    app_id: str = "flyt-xledger-worker"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4
    # Which stages this worker runs: both (the default), or one of them, to scale the
    # enrich stage and the post stage apart (one consumer group either way).
    stages: str = "enrich,post"
    enrich_batch_max: int = 500
    enrich_batch_window_s: float = 0.02
    post_batch_window_s: float = 0.55  # a tenant's payments gathered into one request
    post_batch_max: int = 1000
    # ... and for up to this long while they come from a backlog (`flyt.backlog`, a burst):
    # until a mutation is full or the backlog is worked off.
    post_backlog_window_s: float = 2.0
    # A tenant whose token is missing or refused is paused (held, not dead-lettered): its
    # token is looked at again this often, and tried again anyway after token_retry_s.
    token_recheck_s: float = 5.0
    token_retry_s: float = 600.0
    token_dir: Path | None = None
    # An Xledger request's hard deadline, all phases together: "in flight" is bounded, so
    # a hand-over can wait for it (engine.md). The rebalance timeout must exceed it.
    xledger_request_deadline_s: float = 15.0
    # After an unknown outcome (deadline passed, connection cut, a 5xx on a mutation) a
    # payment waits this long before the lookup that decides a resend: Xledger may still be
    # storing the first request (R14, decided 12-06). Also a new holder's wait after an
    # unclean hand-over.
    xledger_settle_s: float = 60.0
    # SIGTERM: hand everything over and leave within this, whatever the brokers do. Must
    # exceed the request deadline plus the flush: a stop never cuts a mutation.
    stop_grace_s: float = 25.0
    # Backpressure: an input partition with more undone records is paused.
    max_undone_per_partition: int = 10_000
    # Retention of the topics the worker creates that hold work not yet done
    # (submissions, refused payments, dead letters): longer than any pause a tenant may
    # sit out (its token over a holiday) before its payments are posted.
    retention_days: float = 30.0
    metrics_port: int | None = 9108
    sandbox: bool = False  # R2: only then may a loopback sandbox stand in for Xledger
    xledger_endpoint_override: str | None = None
    # "kafka" (Apache Kafka), "tansu" (the embedded broker) or "auto": asked of the broker
    # itself (`worker.engine.broker_kind`). The settings below left at None take the
    # broker's profile (`profile()`); a value set here always wins.
    broker_kind: str = "auto"
    # Every topic the worker creates, its state changelogs included.
    # A lost broker must lose no payment: production's default is 3 copies, 2 in sync.
    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    session_timeout_s: float | None = None
    heartbeat_interval_s: float | None = None
    rebalance_timeout_s: float | None = None
    log_level: str = "INFO"
    # `dlq replay` refuses a record replayed this often: a poison record cannot loop.
    dlq_max_replays: int = 3

    def embedded(self) -> Settings:
        """The settings that suit the embedded Tansu broker."""
        return replace(self, broker_kind="tansu")

    def profile(self) -> BrokerProfile:
        """The broker-dependent settings: the broker kind's profile, with what is set here
        taking precedence. The Tansu workarounds apply to Tansu alone, never to Apache Kafka."""
        if self.broker_kind not in PROFILES:
            raise ValueError(
                f"broker kind {self.broker_kind!r} is not resolved: expected one of "
                f"{sorted(PROFILES)} (detect it with worker.engine.broker_kind)"
            )
        base = PROFILES[self.broker_kind]
        overrides = {
            f.name: getattr(self, f.name)
            for f in fields(BrokerProfile)
            if f.name != "kind" and getattr(self, f.name) is not None
        }
        return replace(base, **overrides)


@dataclass(frozen=True)
class BrokerProfile:
    kind: str
    replication_factor: int
    min_insync_replicas: int
    session_timeout_s: float
    heartbeat_interval_s: float
    rebalance_timeout_s: float

    @property
    def idempotent_producers(self) -> bool:
        # Tansu cannot start an idempotent producer; Apache Kafka has them since 0.11.
        return self.kind == "kafka"


PROFILES: dict[str, BrokerProfile] = {
    # Apache Kafka's own group defaults; 3 copies with 2 in sync fit a three-broker cluster.
    "kafka": BrokerProfile("kafka", 3, 2, 45.0, 3.0, 60.0),
    # Tansu joins a group after about half the session timeout: short sessions start fast.
    # (The rebalance timeout does not slow its joins, and must exceed a hand-over.)
    "tansu": BrokerProfile("tansu", 1, 1, 2.0, 0.3, 25.0),
}


_ENV: dict[str, str] = {
    "bootstrap": "FLYT_BOOTSTRAP_SERVERS",
    "app_id": "FLYT_APP_ID",
    "partitions": "FLYT_PARTITIONS",
    "stages": "FLYT_STAGES",
    "enrich_batch_max": "FLYT_ENRICH_BATCH_MAX",
    "enrich_batch_window_s": "FLYT_ENRICH_BATCH_WINDOW_S",
    "post_batch_window_s": "FLYT_POST_BATCH_WINDOW_S",
    "post_batch_max": "FLYT_POST_BATCH_MAX",
    "post_backlog_window_s": "FLYT_POST_BACKLOG_WINDOW_S",
    "token_recheck_s": "FLYT_TOKEN_RECHECK_S",
    "token_retry_s": "FLYT_TOKEN_RETRY_S",
    "token_dir": "XLEDGER_TOKEN_DIR",
    "xledger_request_deadline_s": "FLYT_XLEDGER_REQUEST_DEADLINE_S",
    "xledger_settle_s": "FLYT_XLEDGER_SETTLE_S",
    "stop_grace_s": "FLYT_STOP_GRACE_S",
    "max_undone_per_partition": "FLYT_MAX_UNDONE_PER_PARTITION",
    "retention_days": "FLYT_RETENTION_DAYS",
    "metrics_port": "FLYT_METRICS_PORT",
    "sandbox": "FLYT_SANDBOX",
    "xledger_endpoint_override": "FLYT_XLEDGER_ENDPOINT",
    "session_timeout_s": "FLYT_SESSION_TIMEOUT_S",
    "heartbeat_interval_s": "FLYT_HEARTBEAT_INTERVAL_S",
    "rebalance_timeout_s": "FLYT_REBALANCE_TIMEOUT_S",
    "broker_kind": "FLYT_BROKER_KIND",
    "replication_factor": "FLYT_REPLICATION_FACTOR",
    "min_insync_replicas": "FLYT_MIN_INSYNC_REPLICAS",
    "log_level": "FLYT_LOG_LEVEL",
    "dlq_max_replays": "FLYT_DLQ_MAX_REPLAYS",
}
_KAFKA_ENV = {f.name: f"FLYT_KAFKA_{f.name.upper()}" for f in fields(KafkaSecurity)}
_KAFKA_ENV["protocol"] = "FLYT_KAFKA_SECURITY_PROTOCOL"
_TOPIC_ENV = {f.name: f"FLYT_TOPIC_{f.name.upper()}" for f in fields(Topics)}


def _convert(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    optional = "None" in str(kind)
    if optional and not raw.strip():
        return None
    if "bool" in str(kind):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if "int" in str(kind):
        return int(raw)
    if "float" in str(kind):
        return float(raw)
    if "Path" in str(kind):
        return Path(raw) if raw else None
    return raw or None


def from_env(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for name, var in _ENV.items():
        if var in env:
            try:
                values[name] = _convert(name, env[var])
            except ValueError:
                raise ValueError(f"{var}={env[var]!r} is not a valid value") from None
    if values.get("log_level"):
        values["log_level"] = values["log_level"].strip().upper()  # debug, Debug, DEBUG
    topics = Topics(**{n: env[v] for n, v in _TOPIC_ENV.items() if env.get(v)})
    kafka: dict[str, Any] = {}
    for f in fields(KafkaSecurity):
        var = _KAFKA_ENV[f.name]
        raw = env.get(var, "").strip()
        if not raw:
            continue
        if f.name == "ssl_check_hostname":
            kafka[f.name] = raw.lower() in {"1", "true", "yes", "on"}
        elif f.name.endswith("_file"):
            kafka[f.name] = Path(raw)
        else:
            kafka[f.name] = raw.upper()
    return Settings(topics=topics, kafka=KafkaSecurity(**kafka), **values)
