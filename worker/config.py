"""Worker settings, from environment variables (`FLYT_…`) with defaults for the embedded mode."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# How far back `worker reconcile`, the month-end proof, must be able to read: the previous
# calendar month, proven on any day of the current one, began at most 62 days ago (two
# 31-day months: July and August, December and January), and a day more for the time zone
# (a month begins at midnight in Oslo, 22:00 or 23:00 UTC the day before, and the broker
# keeps UTC). Every topic reconcile reads must keep at least this long: the start-up check
# warns when one does not (worker/topic_check.py), and the worker's own topics keep this
# long by default (FLYT_RETENTION_DAYS). The CronJob proves the previous month on the 2nd
# (33 days back at most); the rest lets a person run `reconcile --month previous` again on
# any day of the month, and have it whole (exit 6 says when the topics no longer hold it).
RECONCILE_LOOKBACK_DAYS = 63.0


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
    """How every Kafka client of this process authenticates (`worker/kafka_clients/`
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
    # until a mutation is full or the backlog is worked off (the month start, 50,000 over
    # 356 tenants: 2 s gave 0.047 requests per payment, 10 s 0.032, 30 s 0.032).
    post_backlog_window_s: float = 10.0
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
    # Backpressure: an input partition with more undone records is paused. 20,000 holds a
    # month start's submissions whole (50,000 over 356 tenants, 4 partitions): at 10,000
    # the paused partitions closed every tenant's batch half way, two mutations each
    # (0.032 requests per payment, 448 MB; at 20,000: 0.020, 488 MB; Apache Kafka).
    max_undone_per_partition: int = 20_000
    # Retention of the topics the worker creates (submissions, receipts, rejections,
    # refused payments, dead letters): longer than any pause a tenant may sit out (its
    # token over a holiday) before its payments are posted, and at least reconcile's
    # look-back, so that a month-end proof finds every outcome (RECONCILE_LOOKBACK_DAYS).
    retention_days: float = RECONCILE_LOOKBACK_DAYS
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


# --- from the environment ------------------------------------------------------------------
#
# `Settings` stays a frozen dataclass: `dataclasses.replace(settings, …)` is how code and
# tests derive settings (some forty places), and a pydantic model's `model_copy(update=…)`
# would not validate those values either. What comes from outside, the environment, is
# validated here by pydantic-settings models (types, ranges, names) that build the
# dataclass; its defaults stay in the dataclass alone (a variable left unset or blank is
# not passed on). The cross-setting checks of the hand-over's timings stay with them
# (`worker/pipeline/wiring.py` `timings`).

# A Kafka topic's name (and the app id, which prefixes the worker's own topics and names
# its consumer group): what Kafka accepts.
_NAME = r"^[A-Za-z0-9._-]+$"


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _bootstrap(value: str) -> str:
    for address in value.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT[,HOST:PORT…] with ports 1–65535")
    return value


def _port_or_off(value: int) -> int | None:
    return value or None  # 0 turns the endpoint off


Count = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # a timeout, a wait, days kept
Window = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # 0: no gathering
TopicName = Annotated[str, StringConstraints(pattern=_NAME, max_length=249)]
# ... and room for the suffixes of the worker's own topics (`<app>-outcomes-changelog`).
AppId = Annotated[str, StringConstraints(pattern=_NAME, max_length=200)]
Port = Annotated[int, Field(ge=0, le=65535), AfterValidator(_port_or_off)]
BootstrapServers = Annotated[str, AfterValidator(_bootstrap)]
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
BrokerKind = Annotated[Literal["auto", "kafka", "tansu"], BeforeValidator(_lower)]
ProtocolName = Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"]
MechanismName = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
PROTOCOLS: tuple[str, ...] = get_args(ProtocolName)  # worker/kafka_clients/connection.py checks too
MECHANISMS: tuple[str, ...] = get_args(MechanismName)
Protocol = Annotated[ProtocolName, BeforeValidator(_upper)]
Mechanism = Annotated[MechanismName, BeforeValidator(_upper)]


class _FromEnvironment(BaseSettings):
    # The values come from the mapping `from_env` is given (the process's environment by
    # default), as arguments keyed by the variables' names: one path for the process and
    # the tests. pydantic-settings' own environment source reads os.environ alone (a test's
    # mapping would mix with the developer's variables), so it is left out.
    model_config = SettingsConfigDict(extra="forbid", frozen=True, case_sensitive=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _var(name: str) -> Any:
    return Field(None, validation_alias=name)


class _SettingsEnv(_FromEnvironment):
    """`Settings`' variables: one field per `Settings` field (but `kafka` and `topics`),
    named alike, None when the variable is not set."""

    bootstrap: BootstrapServers | None = _var("FLYT_BOOTSTRAP_SERVERS")
    app_id: AppId | None = _var("FLYT_APP_ID")
    partitions: Count | None = _var("FLYT_PARTITIONS")
    stages: str | None = _var("FLYT_STAGES")  # checked with the pipeline (wiring.stage_names)
    enrich_batch_max: Count | None = _var("FLYT_ENRICH_BATCH_MAX")
    enrich_batch_window_s: Window | None = _var("FLYT_ENRICH_BATCH_WINDOW_S")
    post_batch_window_s: Window | None = _var("FLYT_POST_BATCH_WINDOW_S")
    post_batch_max: Count | None = _var("FLYT_POST_BATCH_MAX")
    post_backlog_window_s: Window | None = _var("FLYT_POST_BACKLOG_WINDOW_S")
    token_recheck_s: Positive | None = _var("FLYT_TOKEN_RECHECK_S")
    token_retry_s: Positive | None = _var("FLYT_TOKEN_RETRY_S")
    token_dir: Path | None = _var("XLEDGER_TOKEN_DIR")
    xledger_request_deadline_s: Positive | None = _var("FLYT_XLEDGER_REQUEST_DEADLINE_S")
    xledger_settle_s: Positive | None = _var("FLYT_XLEDGER_SETTLE_S")
    stop_grace_s: Positive | None = _var("FLYT_STOP_GRACE_S")
    max_undone_per_partition: Count | None = _var("FLYT_MAX_UNDONE_PER_PARTITION")
    retention_days: Positive | None = _var("FLYT_RETENTION_DAYS")
    metrics_port: Port | None = _var("FLYT_METRICS_PORT")
    sandbox: bool | None = _var("FLYT_SANDBOX")
    xledger_endpoint_override: str | None = _var("FLYT_XLEDGER_ENDPOINT")  # R2: UrlPolicy
    session_timeout_s: Positive | None = _var("FLYT_SESSION_TIMEOUT_S")
    heartbeat_interval_s: Positive | None = _var("FLYT_HEARTBEAT_INTERVAL_S")
    rebalance_timeout_s: Positive | None = _var("FLYT_REBALANCE_TIMEOUT_S")
    broker_kind: BrokerKind | None = _var("FLYT_BROKER_KIND")
    replication_factor: Count | None = _var("FLYT_REPLICATION_FACTOR")
    min_insync_replicas: Count | None = _var("FLYT_MIN_INSYNC_REPLICAS")
    log_level: LogLevel | None = _var("FLYT_LOG_LEVEL")
    dlq_max_replays: Annotated[int, Field(ge=0)] | None = _var("FLYT_DLQ_MAX_REPLAYS")

    @model_validator(mode="after")
    def _together(self) -> _SettingsEnv:
        # Pairs that cannot work whatever the broker (when both are given; a profile's
        # own values agree). The hand-over's timings are checked in wiring.timings.
        rf, isr = self.replication_factor, self.min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(
                f"FLYT_MIN_INSYNC_REPLICAS={isr} exceeds FLYT_REPLICATION_FACTOR={rf}: no "
                "write could ever be acknowledged; lower it to at most the replication factor"
            )
        beat, session = self.heartbeat_interval_s, self.session_timeout_s
        if beat is not None and session is not None and beat >= session:
            raise ValueError(
                f"FLYT_HEARTBEAT_INTERVAL_S={beat:g} must be below FLYT_SESSION_TIMEOUT_S="
                f"{session:g} (a third of it is usual)"
            )
        return self


class _KafkaEnv(_FromEnvironment):
    """`KafkaSecurity`'s variables (`worker/kafka_clients/connection.py` checks how they
    combine)."""

    protocol: Protocol | None = _var("FLYT_KAFKA_SECURITY_PROTOCOL")
    ssl_ca_file: Path | None = _var("FLYT_KAFKA_SSL_CA_FILE")
    ssl_cert_file: Path | None = _var("FLYT_KAFKA_SSL_CERT_FILE")
    ssl_key_file: Path | None = _var("FLYT_KAFKA_SSL_KEY_FILE")
    ssl_key_password_file: Path | None = _var("FLYT_KAFKA_SSL_KEY_PASSWORD_FILE")
    ssl_check_hostname: bool | None = _var("FLYT_KAFKA_SSL_CHECK_HOSTNAME")
    sasl_mechanism: Mechanism | None = _var("FLYT_KAFKA_SASL_MECHANISM")
    sasl_username_file: Path | None = _var("FLYT_KAFKA_SASL_USERNAME_FILE")
    sasl_password_file: Path | None = _var("FLYT_KAFKA_SASL_PASSWORD_FILE")
    sasl_jaas_file: Path | None = _var("FLYT_KAFKA_SASL_JAAS_FILE")


# `Topics`' variables, one per field: FLYT_TOPIC_<FIELD> (a field added to Topics is read
# and checked without a line here).
_TOPIC_FIELDS: dict[str, Any] = {
    f.name: (TopicName | None, _var(f"FLYT_TOPIC_{f.name.upper()}")) for f in fields(Topics)
}
_TopicsEnv = create_model("_TopicsEnv", __base__=_FromEnvironment, **_TOPIC_FIELDS)


def topic_variables(topics: Topics) -> dict[str, str]:
    """`topics` as the FLYT_TOPIC_* variables a worker process or command reads them from."""
    return {f"FLYT_TOPIC_{f.name.upper()}": getattr(topics, f.name) for f in fields(Topics)}


def _variables(model: type[BaseModel]) -> dict[str, str]:
    return {name: str(f.validation_alias) for name, f in model.model_fields.items()}


_ENV = _variables(_SettingsEnv)
_KAFKA_ENV = _variables(_KafkaEnv)
_TOPIC_ENV = _variables(_TopicsEnv)

# FLYT_* variables read elsewhere, not settings: known, so never warned about.
OTHER_VARIABLES = {
    "FLYT_LOG_FORMAT": "worker/logs.py: json or console",
    "FLYT_BUILD_COMMIT": "worker/build.py: the commit the image was built from",
    "FLYT_KAFKA_CACHE": "worker/devenv/kafka_cluster.py: where Apache Kafka's jars are kept",
    "FLYT_REQUIRE_KAFKA": "the tests: Apache Kafka's tests fail instead of skipping",
    "FLYT_REQUIRE_PROMETHEUS": "the tests: Prometheus's tests fail instead of skipping",
}
KNOWN_VARIABLES = frozenset(
    {*_ENV.values(), *_KAFKA_ENV.values(), *_TOPIC_ENV.values(), *OTHER_VARIABLES}
)


class SettingsError(ValueError):
    """A setting that cannot work: one line naming each variable and what to change."""


@dataclass(frozen=True)
class UnknownVariable:
    """A FLYT_* variable that no setting reads (a typo, or a setting from another version).
    Only its name is ever shown: its value could be anything, a password set by mistake."""

    name: str
    closest: str | None

    def __str__(self) -> str:
        hint = f"; did you mean {self.closest}?" if self.closest else ""
        return f"{self.name} is not a setting of this worker (ignored){hint}"


def unknown_variables(environ: Mapping[str, str]) -> list[UnknownVariable]:
    """The FLYT_* variables no setting reads, each with the closest known name if one is
    close. XLEDGER_TOKEN_<REF> are tokens, not settings: never looked at here."""
    return [
        UnknownVariable(name, next(iter(get_close_matches(name, KNOWN_VARIABLES, 1, 0.8)), None))
        for name in sorted(environ)
        if name.startswith("FLYT_") and name not in KNOWN_VARIABLES
    ]


def from_env(
    environ: Mapping[str, str] | None = None,
    *,
    warn: Callable[[UnknownVariable], None] | None = None,
) -> Settings:
    """The settings from the environment (or `environ`). A variable left blank counts as
    unset. Raises SettingsError, one line for every value that cannot work; an unknown
    FLYT_* variable is passed to `warn` (default: a warning of the `worker.config` logger)."""
    env = os.environ if environ is None else environ
    say = warn or (lambda unknown: logging.getLogger(__name__).warning("%s", unknown))
    for unknown in unknown_variables(env):
        say(unknown)
    problems: list[str] = []
    values = _read(_SettingsEnv, env, problems)
    kafka = _read(_KafkaEnv, env, problems)
    topics = _read(_TopicsEnv, env, problems)
    if problems:
        raise SettingsError("; ".join(problems))
    return Settings(topics=Topics(**topics), kafka=KafkaSecurity(**kafka), **values)


def _read(model: type[BaseModel], env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """The variables of `model` that are set (not blank), validated: {field: value}."""
    names = _variables(model)
    given = {var: env[var].strip() for var in names.values() if env.get(var, "").strip()}
    try:
        read = model(**given)
    except ValidationError as exc:
        problems.extend(_problem(e, given) for e in exc.errors())
        return {}
    return {name: getattr(read, name) for name, var in names.items() if var in given}


_SAYS = {
    "greater_than_equal": "must be at least {ge:g}",
    "greater_than": "must be more than {gt:g}",
    "less_than_equal": "must be at most {le:g}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false (1/0, yes/no, on/off)",
    "literal_error": "must be one of {expected}",
    "string_pattern_mismatch": "may hold only letters, digits, '.', '_' and '-'",
    "string_too_long": "must be at most {max_length} characters",
    "value_error": "{error}",
}


def _problem(error: ErrorDetails, given: Mapping[str, str]) -> str:
    """One validation error as `VAR='value' what to change` (the value as it was given)."""
    what = _SAYS.get(error["type"], error["msg"]).format(**error.get("ctx", {}))
    what = what.removeprefix("Value error, ")
    if not error["loc"]:  # a pair of settings (_SettingsEnv._together): the text names them
        return what
    var = str(error["loc"][0])
    shown = repr(given.get(var, error["input"]))
    if len(shown) > 60:
        shown = shown[:57] + "…'"
    return f"{var}={shown} {what}"
