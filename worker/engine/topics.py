"""Creating topics explicitly, with their partition counts and configs."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from worker.kafka_clients import Bootstrap, client_args

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    replication_factor: int = 1


class NotEnoughBrokers(RuntimeError):
    """The cluster has fewer brokers than the replication factor asks for."""


async def ensure_topics(bootstrap: Bootstrap, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(**client_args(bootstrap))
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
