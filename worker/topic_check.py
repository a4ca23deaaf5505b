"""At start, before the worker creates what is missing: are the topics that exist already
fit for it (issue 27)? Flyt makes the payment-status topic, a platform team's tooling may
make the rest, and a topic made earlier with other settings stays as it was made.

- Partitions. The payment-status topic, the submissions topic, `<app>-refused` and the
  state changelogs are co-partitioned: partition p of each reaches the same worker, and a
  store's changelog partition p holds the state of its input's partition p. Each must
  have FLYT_PARTITIONS partitions; one that has not breaks that, and the worker refuses
  to start (exit 78) with the command that fixes it. The outputs (receipts, rejections,
  dead letters) are written by key and the registers are read whole: any count works.
- State kept for ever. A changelog that is not compacted (or kept for ever) loses a
  payment's outcome after its retention (R17), and a control topic that is not would
  resume a tenant paused by hand: refused too. A registers topic that is not is a
  warning (a tenant whose snapshot aged out is held until it is published again,
  nothing is lost).
- Retention. Every topic reconcile reads must keep at least its look-back
  (RECONCILE_LOOKBACK_DAYS), and the topics holding work not done yet at least
  FLYT_RETENTION_DAYS (a tenant's pause): a shorter one is a warning with the command.

A broker that does not report a topic's configs (DescribeConfigs refused by an ACL, or
not served; Tansu reports only the configs a topic was made with, not its defaults)
leaves that topic's configs unchecked: a warning naming it and the command to look by
hand, never a failed start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker import logs
from worker.config import RECONCILE_LOOKBACK_DAYS, Settings
from worker.engine.topics import ExistingTopic, TopicSpec, describe_topics
from worker.kafka_clients.connection import KafkaConnection
from worker.pipeline.topics import refused_topic, stores

log = logs.get("worker.topic_check")

DAY_MS = 24 * 3600 * 1000


class TopicsMismatch(ValueError):
    """Topics that exist with settings that would break a guarantee: refused at start,
    with the command that fixes them (a restart cannot)."""


@dataclass(frozen=True)
class Finding:
    event: str  # the log line's name
    topic: str | None
    text: str  # what is wrong, and what it costs
    fix: str  # the command or setting that mends it
    refuse: bool = False  # a guarantee would break: the worker does not start

    def __str__(self) -> str:
        return f"{self.text}; to fix: {self.fix}"


def copartitioned(s: Settings) -> list[str]:
    """The topics that must have FLYT_PARTITIONS partitions each."""
    return [
        s.topics.payments,
        s.topics.submissions,
        refused_topic(s),
        *(store.changelog for store in stores(s)),
    ]


def retention_needed(s: Settings) -> dict[str, tuple[float, str]]:
    """The least retention in days of each topic whose records must outlive something,
    and what."""
    t, lookback, pause = s.topics, RECONCILE_LOOKBACK_DAYS, s.retention_days
    read = "reconcile's look-back"
    both = f"{read}, and FLYT_RETENTION_DAYS for the work it holds"
    return {
        t.payments: (lookback, read),
        t.receipts: (lookback, read),
        t.rejections: (lookback, read),
        t.submissions: (max(lookback, pause), both),
        t.dlq: (max(lookback, pause), both),
        refused_topic(s): (pause, "FLYT_RETENTION_DAYS for the work it holds"),
    }


def findings(
    s: Settings, existing: dict[str, ExistingTopic], kafka: KafkaConnection
) -> list[Finding]:
    """What is wrong with the topics that exist, for these settings."""
    tools = Tools(kafka)
    out = _partitions(s, existing, tools)
    outcome = "a payment's state (its outcome, R17) would be deleted after the retention"
    forever = {store.changelog: (outcome, True) for store in stores(s)}
    forever[s.topics.control] = (
        "a tenant paused by hand would resume when its pause is deleted by the retention",
        True,
    )
    forever[s.topics.registers] = (
        "a tenant's snapshot would be deleted after the retention (its payments then wait "
        "for the next snapshot)",
        False,
    )
    for name, (cost, refuse) in forever.items():
        if name in existing:
            out += _kept_for_ever(existing[name], tools, cost, refuse=refuse)
    for name, (days, why) in retention_needed(s).items():
        if name in existing:
            out += _retention(existing[name], days, why, tools)
    return out


async def check_topics(kafka: KafkaConnection, s: Settings, specs: Sequence[TopicSpec]) -> None:
    """Look at the topics among `specs` that exist: a warning log line for each that is
    merely short, TopicsMismatch (one line, every such topic) for those that would break
    a guarantee. Call it before creating the missing ones: a count to change is then
    still FLYT_PARTITIONS alone."""
    if s.retention_days < RECONCILE_LOOKBACK_DAYS:
        log.warning(
            "retention_setting_short",
            retention_days=s.retention_days,
            lookback_days=RECONCILE_LOOKBACK_DAYS,
            fix=f"FLYT_RETENTION_DAYS={RECONCILE_LOOKBACK_DAYS:g}",
            message="the topics the worker creates keep less than reconcile's look-back "
            "(a month-end proof of last month, run this month)",
        )
    # A broker that cannot list or describe topics now (starting, a leader moving) raises
    # TopicsUndescribed: exit 1 and a restart, never a start with partitions unchecked.
    existing = await describe_topics(kafka, [spec.name for spec in specs])
    found = findings(s, existing, kafka)
    for f in found:
        if not f.refuse:
            log.warning(f.event, topic=f.topic, message=f.text, fix=f.fix)
    refused = [str(f) for f in found if f.refuse]
    if refused:
        raise TopicsMismatch(" | ".join(refused))


@dataclass(frozen=True)
class Tools:
    """Kafka's own command-line tools, as an operator would run them against this cluster."""

    kafka: KafkaConnection

    def _base(self, tool: str) -> str:
        secured = self.kafka.security.protocol != "PLAINTEXT"
        config = " --command-config client.properties" if secured else ""
        return f"{tool} --bootstrap-server {self.kafka.bootstrap}{config}"

    def grow(self, topic: str, partitions: int) -> str:
        return f"{self._base('kafka-topics.sh')} --alter --topic {topic} --partitions {partitions}"

    def set_config(self, topic: str, config: str) -> str:
        return (
            f"{self._base('kafka-configs.sh')} --alter --entity-type topics "
            f"--entity-name {topic} --add-config {config}"
        )

    def describe(self, topic: str) -> str:
        return (
            f"{self._base('kafka-configs.sh')} --describe --all --entity-type topics "
            f"--entity-name {topic}"
        )


def _partitions(s: Settings, existing: dict[str, ExistingTopic], tools: Tools) -> list[Finding]:
    counts = {name: existing[name].partitions for name in copartitioned(s) if name in existing}
    if all(n == s.partitions for n in counts.values()):
        return []
    # A topic's partitions can grow, never shrink: the count they can all have is the
    # largest; the worker makes the missing ones with FLYT_PARTITIONS.
    target = max(counts.values())
    has = ", ".join(f"{name} has {n}" for name, n in counts.items() if n != s.partitions)
    grow = [tools.grow(name, target) for name, n in counts.items() if n < target]
    steps = [f"set FLYT_PARTITIONS={target}"] if target != s.partitions else []
    steps += [f"run: {' && '.join(grow)}"] if grow else []
    return [
        Finding(
            "topic_partitions_mismatch",
            None,
            f"co-partitioned topics must each have FLYT_PARTITIONS={s.partitions} "
            f"partitions (partition p of each reaches the same worker, and holds its "
            f"state): {has}",
            " and ".join(steps)
            + (
                " (growing a topic that holds records moves keys to other partitions: "
                "docs/deployment.md)"
                if grow
                else ""
            ),
            refuse=True,
        )
    ]


def _kept_for_ever(topic: ExistingTopic, tools: Tools, cost: str, *, refuse: bool) -> list[Finding]:
    config = topic.config
    if config is None or "cleanup.policy" not in config:
        return [_unreported(topic, "cleanup.policy", tools)]
    policy = {p.strip() for p in config["cleanup.policy"].split(",")}
    for_ever = "delete" not in policy or (
        _number(config.get("retention.ms")) == -1
        and _number(config.get("retention.bytes")) in (-1, None)
    )
    if for_ever:
        return []
    return [
        Finding(
            "topic_not_compacted",
            topic.name,
            f"{topic.name} has cleanup.policy={config['cleanup.policy']}: {cost}",
            tools.set_config(topic.name, "cleanup.policy=compact"),
            refuse=refuse,
        )
    ]


def _retention(topic: ExistingTopic, days: float, why: str, tools: Tools) -> list[Finding]:
    config = topic.config
    if config is None or "retention.ms" not in config:
        return [_unreported(topic, "retention.ms", tools)]
    policy = config.get("cleanup.policy", "delete")  # Kafka's default
    if "delete" not in policy:
        return []  # compacted only: nothing ages out
    needed = int(days * DAY_MS)
    out = []
    kept = _number(config["retention.ms"])
    if kept is not None and 0 <= kept < needed:  # -1: for ever
        out.append(
            Finding(
                "topic_retention_short",
                topic.name,
                f"{topic.name} keeps records {kept / DAY_MS:g} days (retention.ms={kept}), "
                f"less than the {days:g} days it must ({why})",
                tools.set_config(topic.name, f"retention.ms={needed}"),
            )
        )
    size = _number(config.get("retention.bytes"))
    if size is not None and size >= 0:
        out.append(
            Finding(
                "topic_retention_bytes",
                topic.name,
                f"{topic.name} has retention.bytes={size}: a partition over that size "
                f"loses its oldest records before {days:g} days",
                tools.set_config(topic.name, "retention.bytes=-1"),
            )
        )
    return out


def _unreported(topic: ExistingTopic, key: str, tools: Tools) -> Finding:
    why = topic.config_error or f"the broker did not report {key}"
    return Finding(
        "topic_config_unchecked",
        topic.name,
        f"{key} of {topic.name} is not checked ({why})",
        f"look by hand: {tools.describe(topic.name)}",
    )


def _number(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
