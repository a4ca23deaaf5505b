"""The topics, created explicitly with their partition counts and configs (contracts.md)."""

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


def topic_specs(s: Settings) -> list[TopicSpec]:
    t = s.topics
    n = s.partitions
    return [
        TopicSpec(t.payments, n, {}),
        # Compacted: the newest snapshot per tenant is what matters; every worker reads all.
        TopicSpec(t.registers, n, {"cleanup.policy": "compact"}),
        TopicSpec(t.submissions, n, {}),
        TopicSpec(t.receipts, n, {}),
        TopicSpec(t.rejections, n, {}),
        TopicSpec(t.dlq, n, {}),
    ]


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=1,
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
