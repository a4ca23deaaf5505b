"""The start-up check of the topics that exist already (issue 27): partitions that break
co-partitioning stop the worker with the command that fixes them; a retention shorter
than reconcile's look-back is a warning with its command; a broker that cannot say is a
warning, never a failed start. The rules here; on real brokers below."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import fields, replace

import pytest
import structlog

from tests.brokers import Broker
from tests.processes import run_worker
from tests.waiting import until_async
from worker.config import (
    RECONCILE_LOOKBACK_DAYS,
    KafkaSecurity,
    Settings,
    Topics,
    topic_variables,
)
from worker.engine.topics import ExistingTopic, TopicSpec, describe_topics, ensure_topics
from worker.kafka_clients.connection import KafkaConnection
from worker.pipeline.topics import changelog_topic, refused_topic, topic_specs
from worker.topic_check import DAY_MS, check_topics, copartitioned, findings

KAFKA = KafkaConnection("kafka-0:9092")
S = Settings(broker_kind="kafka", partitions=4)
LOOKBACK_MS = int(RECONCILE_LOOKBACK_DAYS * DAY_MS)
KAFKA_DEFAULTS = {"cleanup.policy": "delete", "retention.ms": "604800000", "retention.bytes": "-1"}


def as_flyt_makes_it(s: Settings) -> TopicSpec:
    """The payment-status topic as docs/deployment.md asks Flyt to make it (the worker
    makes it, when it is missing, with the broker's default retention)."""
    return TopicSpec(s.topics.payments, s.partitions, {"retention.ms": str(LOOKBACK_MS)})


def made_as_the_worker_makes_them(s: Settings) -> dict[str, ExistingTopic]:
    """Every topic as `topic_specs` makes it (the payment-status topic as Flyt does), as
    Apache Kafka reports it (its defaults beside the configs given)."""
    specs = [as_flyt_makes_it(s), *(t for t in topic_specs(s) if t.name != s.topics.payments)]
    return {
        spec.name: ExistingTopic(spec.name, spec.partitions, {**KAFKA_DEFAULTS, **spec.config})
        for spec in specs
    }


def test_the_topics_the_worker_makes_pass_its_own_check() -> None:
    assert findings(S, made_as_the_worker_makes_them(S), KAFKA) == []


def test_a_flyt_topic_with_more_partitions_refuses_with_the_setting_and_the_commands() -> None:
    existing = made_as_the_worker_makes_them(S)
    payments = S.topics.payments
    existing[payments] = replace(existing[payments], partitions=8)
    [found] = findings(S, existing, KAFKA)
    assert found.refuse and f"{payments} has 8" in found.text
    # Partitions never shrink: the count they can all have is 8.
    assert found.fix.startswith("set FLYT_PARTITIONS=8 and run: kafka-topics.sh ")
    for name in copartitioned(S):
        grow = f"--bootstrap-server kafka-0:9092 --alter --topic {name} --partitions 8"
        assert (grow in found.fix) == (name != payments)
    assert "\n" not in str(found)


def test_a_changelog_with_fewer_partitions_refuses_with_the_command_to_grow_it() -> None:
    existing = made_as_the_worker_makes_them(S)
    changelog = changelog_topic(S, "handled")
    existing[changelog] = replace(existing[changelog], partitions=2)
    [found] = findings(S, existing, KAFKA)
    assert found.refuse and found.fix.startswith(
        f"run: kafka-topics.sh --bootstrap-server kafka-0:9092 --alter --topic {changelog} "
        "--partitions 4"
    )
    assert "FLYT_PARTITIONS=" not in found.fix  # 4 is right: only the changelog is short


def test_outputs_and_registers_may_have_any_partition_count() -> None:
    existing = made_as_the_worker_makes_them(S)
    for name in (S.topics.receipts, S.topics.rejections, S.topics.dlq, S.topics.registers):
        existing[name] = replace(existing[name], partitions=12)
    assert findings(S, existing, KAFKA) == []


def test_a_short_retention_is_a_warning_with_the_command() -> None:
    existing = made_as_the_worker_makes_them(S)
    receipts = S.topics.receipts
    existing[receipts] = replace(existing[receipts], config=KAFKA_DEFAULTS)  # 7 days
    [found] = findings(S, existing, KAFKA)
    assert not found.refuse and found.topic == receipts
    assert "keeps records 7 days" in found.text
    assert found.fix == (
        "kafka-configs.sh --bootstrap-server kafka-0:9092 --alter --entity-type topics "
        f"--entity-name {receipts} --add-config retention.ms={LOOKBACK_MS}"
    )


def test_a_pause_longer_than_the_look_back_asks_as_much_of_the_work_topics() -> None:
    s = replace(S, retention_days=90)
    existing = made_as_the_worker_makes_them(S)  # made with 63 days
    short = {f.topic for f in findings(s, existing, KAFKA) if f.event == "topic_retention_short"}
    assert short == {s.topics.submissions, s.topics.dlq, refused_topic(s)}


def test_kept_for_ever_needs_no_retention_and_a_size_limit_is_named() -> None:
    existing = made_as_the_worker_makes_them(S)
    t = S.topics
    existing[t.payments] = replace(
        existing[t.payments], config={**KAFKA_DEFAULTS, "retention.ms": "-1"}
    )
    existing[t.receipts] = replace(
        existing[t.receipts], config={**KAFKA_DEFAULTS, "cleanup.policy": "compact"}
    )
    assert findings(S, existing, KAFKA) == []
    limited = {**(existing[t.dlq].config or {}), "retention.bytes": "1073741824"}
    existing[t.dlq] = replace(existing[t.dlq], config=limited)
    [found] = findings(S, existing, KAFKA)
    assert found.event == "topic_retention_bytes" and "retention.bytes=-1" in found.fix


def test_a_changelog_or_control_topic_that_ages_out_refuses_and_a_registers_one_warns() -> None:
    existing = made_as_the_worker_makes_them(S)
    changelog, control = changelog_topic(S, "outcomes"), S.topics.control
    registers = S.topics.registers
    for name in (changelog, control, registers):
        existing[name] = replace(existing[name], config=KAFKA_DEFAULTS)
    by_topic = {f.topic: f for f in findings(S, existing, KAFKA)}
    assert by_topic[changelog].refuse and by_topic[control].refuse
    assert not by_topic[registers].refuse
    compact = f"--entity-name {changelog} --add-config cleanup.policy=compact"
    assert by_topic[changelog].fix.endswith(compact)


def test_configs_the_broker_does_not_report_are_warnings_with_the_command_to_look() -> None:
    existing = made_as_the_worker_makes_them(S)
    payments = S.topics.payments
    existing[payments] = replace(
        existing[payments], config=None, config_error="DescribeConfigs answered error 29"
    )
    # Tansu reports only the configs a topic was made with.
    existing[S.topics.receipts] = replace(existing[S.topics.receipts], config={})
    found = findings(S, existing, KAFKA)
    assert {f.topic for f in found} == {payments, S.topics.receipts}
    assert not any(f.refuse for f in found)
    assert all(f.fix.startswith("look by hand: kafka-configs.sh") for f in found)
    assert "error 29" in next(f.text for f in found if f.topic == payments)


def test_the_commands_reach_a_secured_cluster_as_kafkas_tools_do() -> None:
    secured = KafkaConnection("kafka-0:9093", KafkaSecurity(protocol="SASL_SSL"))
    existing = made_as_the_worker_makes_them(S)
    existing[S.topics.dlq] = replace(existing[S.topics.dlq], config=KAFKA_DEFAULTS)
    [found] = findings(S, existing, secured)
    assert "--bootstrap-server kafka-0:9093 --command-config client.properties --alter" in found.fix


# --- on real brokers -------------------------------------------------------------------


async def make(kafka: KafkaConnection, specs: list[TopicSpec]) -> dict[str, ExistingTopic]:
    """Create the topics and wait until the broker's metadata lists them (Apache Kafka's
    brokers learn of a new topic a moment after the controller made it)."""
    await ensure_topics(kafka, specs)
    names = {spec.name for spec in specs}

    async def listed() -> dict[str, ExistingTopic] | None:
        found = await describe_topics(kafka, names)
        return found if set(found) == names else None

    result: dict[str, ExistingTopic] = await until_async(listed, 30, f"topics {sorted(names)}")
    return result


def unique_settings(broker: Broker, partitions: int) -> Settings:
    """Topics of this test alone on the session's broker."""
    tag = uuid.uuid4().hex[:8]
    s = broker.settings(app_id=f"check-{tag}", partitions=partitions)
    return replace(s, topics=Topics(**{f.name: f"check-{tag}.{f.name}" for f in fields(Topics)}))


@pytest.mark.integration
async def test_on_a_real_broker_fit_topics_pass_and_short_ones_are_warnings(broker: Broker) -> None:
    s = unique_settings(broker, partitions=2)
    kafka = KafkaConnection(broker.bootstrap)
    specs = topic_specs(s)
    await make(kafka, [as_flyt_makes_it(s)])
    existing = await make(kafka, specs)  # the rest as the worker makes them
    assert {t.name: t.partitions for t in existing.values()} == {
        t.name: t.partitions for t in specs
    }
    assert findings(s, existing, kafka) == []
    # Made by someone else: receipts kept a day, rejections with no config at all.
    day, bare = f"{s.topics.receipts}.day", f"{s.topics.rejections}.bare"
    # ... and FLYT_RETENTION_DAYS set below the look-back.
    short = replace(s, topics=replace(s.topics, receipts=day, rejections=bare), retention_days=30)
    await make(kafka, [TopicSpec(day, 2, {"retention.ms": str(DAY_MS)}), TopicSpec(bare, 2, {})])
    with structlog.testing.capture_logs() as logged:
        await check_topics(kafka, short, topic_specs(short))  # warnings, no refusal
    warned = {(w["event"], w.get("topic")): w for w in logged if w["log_level"] == "warning"}
    assert warned["topic_retention_short", day]["fix"].endswith(
        f"--entity-name {day} --add-config retention.ms={LOOKBACK_MS}"
    )
    # Apache Kafka reports its default retention (7 days): short. Tansu reports only the
    # configs a topic was made with: unchecked, and said so, never a failed start.
    expected = "topic_retention_short" if broker.kind == "kafka" else "topic_config_unchecked"
    assert set(warned) == {
        ("retention_setting_short", None),
        ("topic_retention_short", day),
        (expected, bare),
    }
    assert warned["retention_setting_short", None]["fix"] == "FLYT_RETENTION_DAYS=63"


@pytest.mark.integration
def test_run_refuses_topics_of_another_partition_count_before_making_any(broker: Broker) -> None:
    s = unique_settings(broker, partitions=2)
    kafka = KafkaConnection(broker.bootstrap)
    # Flyt made the payment-status topic with 3 partitions, a platform team the
    # submissions topic with 2, as the worker expects.
    made_before = [TopicSpec(s.topics.payments, 3, {}), TopicSpec(s.topics.submissions, 2, {})]
    asyncio.run(make(kafka, made_before))
    env = {
        **broker.env(),
        "FLYT_METRICS_PORT": "0",
        "FLYT_LOG_FORMAT": "json",
        "FLYT_APP_ID": s.app_id,
        "FLYT_PARTITIONS": "2",
        **topic_variables(s.topics),
    }
    proc = run_worker(env)
    assert proc.returncode == 78, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert f"{s.topics.payments} has 3" in errors[0]
    # Partitions only grow: all at 3, the submissions topic grown to it.
    grow = (
        f"kafka-topics.sh --bootstrap-server {broker.bootstrap} --alter --topic "
        f"{s.topics.submissions} --partitions 3"
    )
    assert f"to fix: set FLYT_PARTITIONS=3 and run: {grow} (" in errors[0]
    # Refused before anything was made: the worker's own topics come with the new count.
    made = asyncio.run(describe_topics(kafka, [t.name for t in topic_specs(s)]))
    assert set(made) == {s.topics.payments, s.topics.submissions}
    json_lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    assert not any(line.get("level") == "error" for line in json_lines)
