"""Settings from the environment (issue 27): types, ranges, names; an unknown FLYT_*
variable warned about by name; a setting that cannot work is one line and exit 78."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from tests.processes import run_worker, subprocess_env
from worker import config
from worker.config import KafkaSecurity, Settings, SettingsError, Topics, UnknownVariable, from_env

ROOT = Path(__file__).resolve().parent.parent


def test_nothing_set_is_the_defaults_and_settings_stay_a_dataclass() -> None:
    s = from_env({})
    assert s == Settings()
    assert replace(s, partitions=8).partitions == 8  # code and tests derive settings so


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("FLYT_PARTITIONS", "0", "must be at least 1"),
        ("FLYT_PARTITIONS", "many", "must be a whole number"),
        ("FLYT_PARTITIONS", "2.5", "must be a whole number"),
        ("FLYT_METRICS_PORT", "70000", "must be at most 65535"),
        ("FLYT_METRICS_PORT", "-1", "must be at least 0"),
        ("FLYT_STOP_GRACE_S", "0", "must be more than 0"),
        ("FLYT_XLEDGER_SETTLE_S", "-5", "must be more than 0"),
        ("FLYT_SESSION_TIMEOUT_S", "nan", "must be a finite number"),
        ("FLYT_POST_BATCH_WINDOW_S", "-0.1", "must be at least 0"),
        ("FLYT_RETENTION_DAYS", "0", "must be more than 0"),
        ("FLYT_ENRICH_BATCH_MAX", "0", "must be at least 1"),
        ("FLYT_REPLICATION_FACTOR", "0", "must be at least 1"),
        ("FLYT_SANDBOX", "maybe", "must be true or false"),
        ("FLYT_KAFKA_SSL_CHECK_HOSTNAME", "sometimes", "must be true or false"),
        ("FLYT_BROKER_KIND", "zookeeper", "must be one of 'auto', 'kafka' or 'tansu'"),
        ("FLYT_LOG_LEVEL", "loud", "must be one of 'DEBUG'"),
        ("FLYT_KAFKA_SECURITY_PROTOCOL", "TLS", "must be one of 'PLAINTEXT'"),
        ("FLYT_KAFKA_SASL_MECHANISM", "GSSAPI", "must be one of 'SCRAM-SHA-512'"),
        ("FLYT_APP_ID", "flyt xledger", "may hold only letters, digits"),
        ("FLYT_TOPIC_PAYMENTS", "flyt/payments", "may hold only letters, digits"),
        ("FLYT_BOOTSTRAP_SERVERS", "kafka", "must be HOST:PORT"),
        ("FLYT_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:99999", "ports 1–65535"),
    ],
)
def test_a_value_that_cannot_work_is_refused_naming_the_variable_and_what_to_change(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        from_env({variable: value})
    line = str(refused.value)
    assert line.startswith(f"{variable}={value!r} ") and says in line
    assert "\n" not in line and "pydantic" not in line.lower()


def test_every_value_that_cannot_work_is_named_on_one_line() -> None:
    bad = {"FLYT_PARTITIONS": "0", "FLYT_METRICS_PORT": "http", "FLYT_TOPIC_DLQ": "a b"}
    with pytest.raises(SettingsError) as refused:
        from_env(bad)
    line = str(refused.value)
    assert "\n" not in line and all(variable in line for variable in bad)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        (
            {"FLYT_REPLICATION_FACTOR": "1", "FLYT_MIN_INSYNC_REPLICAS": "2"},
            "FLYT_MIN_INSYNC_REPLICAS=2 exceeds FLYT_REPLICATION_FACTOR=1",
        ),
        (
            {"FLYT_SESSION_TIMEOUT_S": "10", "FLYT_HEARTBEAT_INTERVAL_S": "10"},
            "FLYT_HEARTBEAT_INTERVAL_S=10 must be below FLYT_SESSION_TIMEOUT_S=10",
        ),
    ],
    ids=["in-sync-above-copies", "heartbeat-not-below-session"],
)
def test_a_pair_that_cannot_work_whatever_the_broker_is_refused(
    setting: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)):
        from_env(setting)


def test_values_are_read_with_their_types_and_any_case() -> None:
    s = from_env(
        {
            "FLYT_BOOTSTRAP_SERVERS": "kafka-0:9092,[::1]:9093",
            "FLYT_PARTITIONS": " 12 ",
            "FLYT_LOG_LEVEL": "debug",
            "FLYT_BROKER_KIND": "Kafka",
            "FLYT_SANDBOX": "YES",
            "FLYT_STOP_GRACE_S": "30",
            "FLYT_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "FLYT_KAFKA_SASL_MECHANISM": "scram-sha-256",
            "FLYT_TOPIC_PAYMENTS": "flyt.payment-status.v2",
            "XLEDGER_TOKEN_DIR": "/var/run/secrets/xledger",
        }
    )
    assert s.bootstrap == "kafka-0:9092,[::1]:9093" and s.partitions == 12
    assert (s.log_level, s.broker_kind, s.sandbox, s.stop_grace_s) == ("DEBUG", "kafka", True, 30.0)
    assert (s.kafka.protocol, s.kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert s.topics.payments == "flyt.payment-status.v2" and s.topics.dlq == Topics().dlq
    assert s.token_dir == Path("/var/run/secrets/xledger")


def test_a_blank_variable_is_unset_and_port_0_turns_metrics_off() -> None:
    # A ConfigMap often carries a key with no value: the default, not an error.
    blank = from_env({"FLYT_PARTITIONS": "", "FLYT_BOOTSTRAP_SERVERS": "  ", "FLYT_APP_ID": ""})
    assert blank == Settings()
    assert from_env({"FLYT_METRICS_PORT": "0"}).metrics_port is None


def test_an_unknown_flyt_variable_is_named_with_the_closest_setting_never_its_value() -> None:
    heard: list[UnknownVariable] = []
    environ = {
        "FLYT_PARTITONS": "8",  # a typo
        "FLYT_KAFKA_SASL_PASSWORD": "hunter2",  # a password where its file belongs
        "FLYT_WHATEVER": "1",
        "XLEDGER_TOKEN_T_FJORDBY": "a-token",  # tokens are not settings
        "HOME": "/root",
        "FLYT_LOG_FORMAT": "json",  # read by worker/logs.py: known
    }
    s = from_env(environ, warn=heard.append)
    assert s.partitions == 4  # ignored, as the warning says
    assert [(u.name, u.closest) for u in heard] == [
        ("FLYT_KAFKA_SASL_PASSWORD", "FLYT_KAFKA_SASL_PASSWORD_FILE"),
        ("FLYT_PARTITONS", "FLYT_PARTITIONS"),
        ("FLYT_WHATEVER", None),
    ]
    said = " ".join(map(str, heard))
    assert "did you mean FLYT_PARTITIONS?" in said
    assert "hunter2" not in said and "XLEDGER_TOKEN" not in said and "a-token" not in said


def test_the_variables_keep_their_names() -> None:
    """Deployments set these: a renamed variable would be ignored (and now warned about)."""
    assert config._ENV == {
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
    kafka = {f.name: f"FLYT_KAFKA_{f.name.upper()}" for f in fields(KafkaSecurity)}
    assert {**kafka, "protocol": "FLYT_KAFKA_SECURITY_PROTOCOL"} == config._KAFKA_ENV
    assert {f.name: f"FLYT_TOPIC_{f.name.upper()}" for f in fields(Topics)} == config._TOPIC_ENV
    # Every setting has its variable: a field added to Settings is read from somewhere.
    assert set(config._ENV) == {f.name for f in fields(Settings)} - {"kafka", "topics"}


def test_every_flyt_variable_the_repository_names_is_known() -> None:
    """A FLYT_* name used in the code, the manifests or the docs but unknown to the settings
    would be warned about at every start."""
    named: set[str] = set()
    for folder in ("worker", "tests", "deploy", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".yaml", ".yml", ".md", ".toml"} and path.is_file():
                named |= set(re.findall(r"\bFLYT_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    named |= set(re.findall(r"\bFLYT_[A-Z0-9_]*[A-Z0-9]\b", (ROOT / "README.md").read_text()))
    examples = {"FLYT_PARTITONS", "FLYT_WHATEVER", "FLYT_KAFKA_SASL_PASSWORD"}  # above
    assert named - config.KNOWN_VARIABLES - examples == set()


def run_refused(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A worker that should refuse its settings, run to its end (JSON logs)."""
    return run_worker({"FLYT_METRICS_PORT": "0", "FLYT_LOG_FORMAT": "json", **env}, timeout=60)


def test_run_with_a_setting_that_cannot_work_exits_78_with_one_line() -> None:
    # The broker is never asked: the settings are refused first.
    proc = run_refused({"FLYT_BOOTSTRAP_SERVERS": "127.0.0.1:1", "FLYT_STOP_GRACE_S": "-1"})
    assert proc.returncode == 78
    assert proc.stderr.strip().splitlines() == ["Error: FLYT_STOP_GRACE_S='-1' must be more than 0"]


def test_run_warns_about_an_unknown_variable_in_a_log_line_naming_it() -> None:
    proc = run_refused(
        {
            "FLYT_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "FLYT_PARTITONS": "8",
            "FLYT_KAFKA_SASL_PASSWORD": "hunter2",
            "XLEDGER_TOKEN_T_FJORDBY": "a-token",
            # Refused before any connection (no user or password files): a quick exit 78.
            "FLYT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        }
    )
    assert proc.returncode == 78, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    unknown = {line["variable"]: line for line in lines if line["event"] == "setting_unknown"}
    assert unknown["FLYT_PARTITONS"]["did_you_mean"] == "FLYT_PARTITIONS"
    assert unknown["FLYT_PARTITONS"]["level"] == "warning"
    assert set(unknown) == {"FLYT_PARTITONS", "FLYT_KAFKA_SASL_PASSWORD"}
    assert "hunter2" not in proc.stderr and "a-token" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_operator_command_with_a_setting_that_cannot_work_exits_78_as_run_does() -> None:
    # A CronJob (reconcile) or a script tells a refused setting (78) from a broker away (1).
    for command in (["dlq", "list"], ["status"], ["preflight", "--snapshot", "none.json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "worker", *command],
            env=subprocess_env({"FLYT_BOOTSTRAP_SERVERS": "127.0.0.1:1", "FLYT_PARTITIONS": "x"}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 78, (command, proc.stderr)
        assert proc.stderr.strip().splitlines() == [
            "Error: FLYT_PARTITIONS='x' must be a whole number"
        ], command
