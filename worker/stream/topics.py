"""The topics, created explicitly with their partition counts and configs (contracts.md).

Every topic gets the broker profile's replication factor and `min.insync.replicas`:
with 3 copies, 2 in sync and producers on `acks=all`, a lost broker loses no payment.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from worker.config import Settings

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    replication_factor: int = 1


def replication_config(s: Settings) -> dict[str, str]:
    return {"min.insync.replicas": str(s.profile().min_insync_replicas)}


# The worker's faust tables (stream/pipeline.py): payment state, changelogged.
HANDLED_TABLE = "handled"
PENDING_TABLE = "pending-rejections"


def leader_topic(s: Settings) -> str:
    """faust's assignor topic: made here so that it is replicated like the others."""
    return f"{s.app_id}-__assignor-__leader"


def changelog_topic(s: Settings, table: str) -> str:
    """A table's changelog, named as faust names it. Made here, compacted and replicated,
    before faust starts: a metadata request for a topic not made yet would let a broker
    that auto-creates topics make it with its defaults (not compacted, no min ISR)."""
    return f"{s.app_id}-{table}-changelog"


# Records the worker itself must always be able to write, whatever their input's size:
# a dead letter (the input plus headers) and a table entry (R16 keeps the event). Inputs
# are held to the broker's default (1 MiB); these topics take four times that.
LARGE_RECORD_BYTES = 4 * 1024 * 1024
_LARGE = {"max.message.bytes": str(LARGE_RECORD_BYTES)}


def topic_specs(s: Settings) -> list[TopicSpec]:
    t = s.topics
    n = s.partitions
    rf = s.profile().replication_factor
    isr = replication_config(s)
    return [
        TopicSpec(t.payments, n, isr, rf),
        # Compacted: the newest snapshot per tenant is what matters; every worker reads all.
        TopicSpec(t.registers, n, {"cleanup.policy": "compact", **isr}, rf),
        TopicSpec(t.submissions, n, isr, rf),
        TopicSpec(t.receipts, n, isr, rf),
        TopicSpec(t.rejections, n, isr, rf),
        TopicSpec(t.dlq, n, {**_LARGE, **isr}, rf),
        TopicSpec(leader_topic(s), 1, isr, rf),
        *(
            TopicSpec(
                changelog_topic(s, table), n, {"cleanup.policy": "compact", **_LARGE, **isr}, rf
            )
            for table in (HANDLED_TABLE, PENDING_TABLE)
        ),
    ]


class NotEnoughBrokers(RuntimeError):
    """The cluster has fewer brokers than the replication factor asks for."""


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        brokers = len((await admin.describe_cluster())["brokers"])
        wanted = max(s.replication_factor for s in missing)
        if wanted > brokers:
            raise NotEnoughBrokers(
                f"replication factor {wanted} needs {wanted} brokers, the cluster at "
                f"{bootstrap} has {brokers}: for a development cluster set "
                "FLYT_REPLICATION_FACTOR and FLYT_MIN_INSYNC_REPLICAS to 1"
            )
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    topic_configs=s.config,
                )
                for s in missing
            ]
        )
        # aiokafka does not raise on a per-topic error: read the codes.
        for name, code, *_ in getattr(response, "topic_errors", []) or []:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"could not create topic {name}: error code {code}")
        return [s.name for s in missing]
    finally:
        await admin.close()
