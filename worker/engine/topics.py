"""Creating topics explicitly, with their partition counts and configs; describing the
ones that exist already."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from worker.kafka_clients.client_args import client_args
from worker.kafka_clients.connection import Bootstrap

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    replication_factor: int = 1


class TopicsUndescribed(RuntimeError):
    """The broker would not say which topics exist or how many partitions they have."""


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


@dataclass(frozen=True)
class ExistingTopic:
    name: str
    partitions: int
    # The configs the broker reported (DescribeConfigs): Apache Kafka reports every one,
    # its defaults too; Tansu only those given when the topic was made. None: the broker
    # did not answer (`config_error` says why: an old broker, an ACL without
    # DescribeConfigs).
    config: dict[str, str] | None
    config_error: str | None = None


async def describe_topics(bootstrap: Bootstrap, names: Iterable[str]) -> dict[str, ExistingTopic]:
    """The topics among `names` that exist: their partition counts and configs. Topics
    that do not exist are left out (never asked for by name: a broker that creates topics
    on a metadata request would make them)."""
    admin = AIOKafkaAdminClient(**client_args(bootstrap))
    await admin.start()
    try:
        try:
            existing = sorted(set(names) & set(await admin.list_topics()))
            described = await admin.describe_topics(existing) if existing else []
        except KafkaError as exc:
            raise TopicsUndescribed(
                f"the broker at {bootstrap} did not list or describe the topics "
                f"({type(exc).__name__}: {exc}): they cannot be checked; the worker stops, "
                "to be started again"
            ) from None
        partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
        if not partitions:
            return {}
        configs: dict[str, dict[str, str] | str] = {}
        try:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name) for name in partitions]
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            why = f"DescribeConfigs failed: {type(exc).__name__} {exc}".strip()
            configs = dict.fromkeys(partitions, why)
        else:
            for response in responses:
                for resource in response.to_object()["resources"]:
                    name, code = resource["resource_name"], resource["error_code"]
                    configs[name] = (
                        {
                            e["config_names"]: e["config_value"]
                            for e in resource["config_entries"]
                            if e["config_value"] is not None  # sensitive, or no value
                        }
                        if code == 0
                        else f"DescribeConfigs answered error {code} "
                        f"({resource['error_message'] or 'no message'})"
                    )
        found = {}
        for name, count in partitions.items():
            config = configs.get(name, "DescribeConfigs said nothing of it")
            found[name] = (
                ExistingTopic(name, count, config)
                if isinstance(config, dict)
                else ExistingTopic(name, count, None, config)
            )
        return found
    finally:
        await admin.close()
