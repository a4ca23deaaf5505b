"""The pipeline's stages on the engine's memory backend: fast, in process, beside the
real-broker tests (never instead of them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

from tests.engine.memory import memory_engine
from worker.config import Settings
from worker.contracts import RegisterSnapshot
from worker.core.register_book import RegisterBook
from worker.demo.snapshots import demo_snapshot_dicts
from worker.engine.engine import Engine, Stage, StageContext
from worker.engine.memory import MemoryBackend, MemoryBroker
from worker.engine.records import Record, TopicPartition
from worker.pipeline.enrich_stage import EnrichStage
from worker.pipeline.topics import topic_specs
from worker.pipeline.wiring import Pipeline, engine_settings
from worker.xledger.client import XledgerClient

S = replace(Settings(broker_kind="tansu", app_id="mem"), partitions=2)
T = S.topics


def memory_broker(s: Settings = S) -> MemoryBroker:
    broker = MemoryBroker(max_record_bytes=1024 * 1024)
    for spec in topic_specs(s):
        broker.create_topic(spec.name, spec.partitions)
    return broker


def book(snapshots: list[dict[str, Any]] | None = None) -> RegisterBook:
    b = RegisterBook()
    for snap in snapshots or demo_snapshot_dicts():
        assert b.offer(RegisterSnapshot.model_validate(snap)).accepted
    return b


StageT = TypeVar("StageT", bound=Stage)


def stage_engine(
    broker: MemoryBroker, s: Settings, make: Callable[[StageContext], StageT]
) -> tuple[Engine, StageT]:
    """One stage alone on an engine of the memory backend (the other is not subscribed):
    the one way the tests build one."""
    engine = memory_engine(broker, engine_settings(s), make)
    [stage] = engine.stages
    return engine, stage  # type: ignore[return-value]


def enrich_engine(
    broker: MemoryBroker, b: RegisterBook, s: Settings = S
) -> tuple[Engine, EnrichStage]:
    """The enrich stage alone on an engine (the post stage is not subscribed)."""
    return stage_engine(broker, s, lambda ctx: EnrichStage(s, b, ctx))


def publish(
    broker: MemoryBroker, events: list[dict[str, Any] | bytes], topic: str = T.payments
) -> None:
    for e in events:
        if isinstance(e, bytes):
            broker.append(topic, b"unreadable", e)
        else:
            broker.append(topic, e["payment_id"].encode(), json.dumps(e).encode())


def bodies(broker: MemoryBroker, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in broker.read_all(topic)]


def committed_all(broker: MemoryBroker, s: Settings, topic: str) -> bool:
    group = broker.group(s.app_id)
    return all(
        (group.committed.get(TopicPartition(topic, p)) or 0) == len(broker.read(topic, p))
        for p in range(broker.partitions(topic))
    )


def records(broker: MemoryBroker, topic: str) -> list[Record]:
    return broker.read_all(topic)


@asynccontextmanager
async def memory_pipeline(
    broker: MemoryBroker,
    s: Settings,
    client: XledgerClient,
    snapshots: list[dict[str, Any]] | None = None,
) -> AsyncIterator[Pipeline]:
    """The whole worker (register cache, enrich and post stages: enrich → post → refused →
    enrich) on the memory backend; the registers topic gets the snapshots first if it is
    empty. Stopped, and its client closed, however the test ends."""
    for spec in topic_specs(s):  # its own changelogs (another app id has others)
        broker.create_topic(spec.name, spec.partitions)
    if not broker.read_all(s.topics.registers):
        for snap in snapshots or demo_snapshot_dicts():
            broker.append(s.topics.registers, snap["tenant_id"].encode(), json.dumps(snap).encode())
    pipeline = Pipeline(s, None, client, backend=MemoryBackend(broker))
    await pipeline.start()
    try:
        await pipeline.wait_ready(10.0)
        yield pipeline
    finally:
        await pipeline.stop(asyncio.get_running_loop().time() + 3.0)
        await client.aclose()
