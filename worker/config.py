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


@dataclass(frozen=True)
class Settings:
    bootstrap: str | None = None  # None: the embedded broker
    app_id: str = "flyt-xledger-worker"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4
    enrich_batch_max: int = 500
    enrich_batch_window_s: float = 0.02
    post_batch_window_s: float = 0.25  # gather a tenant's burst into few requests
    post_batch_max: int = 1000
    token_dir: Path | None = None
    metrics_port: int | None = 9108
    sandbox: bool = False  # R2: only then may a loopback sandbox stand in for Xledger
    xledger_endpoint_override: str | None = None
    # Tansu joins a group after about half the session timeout; Apache Kafka's defaults
    # suit production. The embedded mode and the tests set these low.
    session_timeout_s: float = 30.0
    heartbeat_interval_s: float = 3.0
    rebalance_timeout_s: float = 30.0
    # Tansu reports a partition's end as the last batch's base offset + 1: with
    # one-record batches that is exact, and faust's table recovery is complete.
    one_record_batches: bool = False
    log_level: str = "INFO"

    def embedded(self) -> Settings:
        """The settings that suit the embedded Tansu broker."""
        return replace(
            self,
            session_timeout_s=2.0,
            heartbeat_interval_s=0.3,
            rebalance_timeout_s=3.0,
            one_record_batches=True,
        )


_ENV: dict[str, str] = {
    "bootstrap": "FLYT_BOOTSTRAP_SERVERS",
    "app_id": "FLYT_APP_ID",
    "partitions": "FLYT_PARTITIONS",
    "enrich_batch_max": "FLYT_ENRICH_BATCH_MAX",
    "enrich_batch_window_s": "FLYT_ENRICH_BATCH_WINDOW_S",
    "post_batch_window_s": "FLYT_POST_BATCH_WINDOW_S",
    "post_batch_max": "FLYT_POST_BATCH_MAX",
    "token_dir": "XLEDGER_TOKEN_DIR",
    "metrics_port": "FLYT_METRICS_PORT",
    "sandbox": "FLYT_SANDBOX",
    "xledger_endpoint_override": "FLYT_XLEDGER_ENDPOINT",
    "session_timeout_s": "FLYT_SESSION_TIMEOUT_S",
    "heartbeat_interval_s": "FLYT_HEARTBEAT_INTERVAL_S",
    "rebalance_timeout_s": "FLYT_REBALANCE_TIMEOUT_S",
    "one_record_batches": "FLYT_ONE_RECORD_BATCHES",
    "log_level": "FLYT_LOG_LEVEL",
}
_TOPIC_ENV = {f.name: f"FLYT_TOPIC_{f.name.upper()}" for f in fields(Topics)}


def _convert(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if "bool" in str(kind):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if "int" in str(kind) and "None" in str(kind):
        return int(raw) if raw.strip() else None
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
    topics = Topics(**{n: env[v] for n, v in _TOPIC_ENV.items() if env.get(v)})
    return Settings(topics=topics, **values)
