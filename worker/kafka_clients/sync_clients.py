"""The operator tools' Kafka clients (kafka-python: short synchronous commands), built
with the same connection settings as the worker's (`client_args`). The library's names
the tools need are given from here: only this package imports it."""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from worker.kafka_clients.client_args import client_args
from worker.kafka_clients.connection import Bootstrap

__all__ = [
    "BrokerError",
    "ConfigResource",
    "ConfigResourceType",
    "KafkaAdminClient",
    "KafkaConsumer",
    "KafkaProducer",
    "NewTopic",
    "TopicAlreadyExistsError",
    "TopicPartition",
    "admin",
    "consumer",
    "producer",
]

BrokerError = KafkaError


def consumer(bootstrap: Bootstrap, **kwargs: Any) -> KafkaConsumer:
    return KafkaConsumer(**client_args(bootstrap), **kwargs)


def producer(bootstrap: Bootstrap, **kwargs: Any) -> KafkaProducer:
    return KafkaProducer(**client_args(bootstrap), **kwargs)


def admin(bootstrap: Bootstrap, **kwargs: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**client_args(bootstrap), **kwargs)
