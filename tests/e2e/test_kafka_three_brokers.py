"""Apache Kafka, three brokers: a broker SIGKILLed while payments flow loses nothing.

Topics have 3 copies with `min.insync.replicas` 2 and producers write with `acks=all`, so
every record the worker has been told is written survives the loss of one broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from tests.brokers import Broker
from tests.ledger import assert_ledger_exactly_once
from tests.processes import free_port, stop_process
from tests.stream_helpers import (
    expected_outcomes,
    prepare,
    start_worker,
    unique_settings,
    watch_until,
    worker_env,
)
from tests.waiting import until_async
from worker.demo.events import generate_events
from worker.demo.harness import start_demo_sandbox
from worker.demo.snapshots import demo_snapshot_dicts
from worker.demo.watcher import OutcomeWatcher
from worker.devenv.feed import event_records, publish
from worker.pipeline.topics import refused_topic, stores

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


@pytest.fixture
def cluster(kafka3: Broker) -> Broker:
    return kafka3


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="flyt-test-admin")


def busiest_leader(bootstrap: str, topics: list[str]) -> int:
    """The broker that leads most partitions of these topics: the one worth killing."""
    admin = _admin(bootstrap)
    try:
        leaders = Counter(
            p["leader_id"] for t in admin.describe_topics(topics) for p in t["partitions"]
        )
    finally:
        admin.close()
    return leaders.most_common(1)[0][0]


def replication_of(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, str, int]]:
    """topic → (replicas per partition, min.insync.replicas, fewest in-sync replicas)."""
    admin = _admin(bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics(topics)}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics], config_filter="all"
        )
    finally:
        admin.close()
    out = {}
    for topic in topics:
        parts = described[topic]["partitions"]
        out[topic] = (
            min(len(p["replica_nodes"]) for p in parts),
            _config_value(configs, topic, "min.insync.replicas"),
            min(len(p["isr_nodes"]) for p in parts),
        )
    return out


def _config_value(configs: dict[str, Any], topic: str, key: str) -> str:
    entry = configs["topic"][topic][key]
    # Set on the topic by the worker, not inherited from the brokers' defaults.
    assert entry["config_source"] == "DYNAMIC_TOPIC_CONFIG", (topic, key, entry)
    return str(entry["value"])


async def test_a_broker_killed_mid_flow_loses_nothing_and_posts_nothing_twice(
    cluster: Broker, tmp_path: Path
) -> None:
    s = unique_settings(cluster, "3b", post_batch_window_s=0.05)
    assert s.profile().replication_factor == 3 and s.profile().min_insync_replicas == 2
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    sandbox, tokens = await start_demo_sandbox()
    port = free_port()
    events = list(generate_events(3000, seed=303))
    submitted, rejected = expected_outcomes(snapshots, events)
    watcher = OutcomeWatcher(cluster.bootstrap, s)
    proc = start_worker(worker_env(cluster, s, tokens, sandbox.url, port), tmp_path / "w.log")
    kafka = cluster.cluster
    victim = 0
    feed: asyncio.Task[None] | None = None
    try:
        await watcher.start()
        records = event_records(events)

        async def flow() -> None:  # about 300 events a second: the kill lands mid-flow
            for i in range(0, len(records), 30):
                await publish(cluster.bootstrap, s.topics.payments, records[i : i + 30], False)
                await asyncio.sleep(0.1)

        feed = asyncio.create_task(flow())

        async def receipts(n: int) -> bool:
            await watcher.poll()
            return len(watcher.posted) >= n

        await until_async(lambda: receipts(300), 120, "the first receipts")
        t = s.topics
        victim = busiest_leader(cluster.bootstrap, [t.payments, t.submissions, t.receipts])
        kafka.kill(victim)
        killed_at, seen = time.monotonic(), len(watcher.posted)
        assert seen < len(submitted), "the flow ended before the broker was killed"
        await until_async(lambda: receipts(seen + 300), 120, "receipts with a broker down")
        print(f"\nbroker {victim} killed after {seen} receipts; flow went on")
        kafka.restart(victim)
        print(f"broker {victim} back after {time.monotonic() - killed_at:.1f} s")
        await feed
        await watch_until(watcher, submitted | rejected, 240)
        assert watcher.posted | watcher.rejected == submitted | rejected
        assert_ledger_exactly_once(sandbox.ledger(), watcher.posted)

        worker_topics = [t.payments, t.registers, t.submissions, t.receipts, t.rejections, t.dlq]
        engine_topics = [refused_topic(s), *(store.changelog for store in stores(s))]
        topics = worker_topics + engine_topics

        async def rejoined() -> bool:  # the restarted broker is back in every ISR
            return all(isr == 3 for _, _, isr in replication_of(cluster.bootstrap, topics).values())

        await until_async(rejoined, 120, f"broker {victim} back in sync", interval_s=1.0)
        for topic, (replicas, min_isr, _) in replication_of(cluster.bootstrap, topics).items():
            assert (replicas, min_isr) == (3, "2"), topic
    finally:
        if feed is not None:
            feed.cancel()
        stop_process(proc)
        await watcher.stop()
        await sandbox.stop()
        if victim and not kafka.alive(victim):
            kafka.restart(victim)
