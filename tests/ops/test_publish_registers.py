"""Operators publish register snapshots (`python -m worker publish-registers`)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.brokers import Broker
from tests.stream_helpers import unique_settings
from worker.core.register_book import RegisterBook
from worker.demo.snapshots import demo_snapshot_dicts
from worker.engine.kafka import KafkaReader
from worker.engine.topics import ensure_topics
from worker.pipeline.register_cache import RegisterCache
from worker.pipeline.topics import topic_specs

pytestmark = pytest.mark.integration


def publish_cmd(broker: Broker, topic: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "publish-registers",
            "--bootstrap",
            broker.bootstrap,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"FLYT_TOPIC_REGISTERS": topic, "PATH": "/usr/bin:/bin"},
    )


async def test_invalid_file_publishes_nothing_valid_file_reaches_the_workers(
    broker: Broker, tmp_path: Path
) -> None:
    s = unique_settings(broker, "publish")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    snapshots = demo_snapshot_dicts()
    bad = copy.deepcopy(snapshots)
    for snap in bad:
        snap["version"] = 7  # had any of these been published, v7 would be in force
    bad[1]["registers"]["barn"] = [
        {"child_id": "B-1", "value": "P"},
        {"child_id": "B-2", "value": "P"},
    ]
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad, ensure_ascii=False), "utf-8")

    refused = publish_cmd(broker, s.topics.registers, "--file", str(bad_file))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "BARN_VALUE_ON_TWO_CHILDREN" in refused.stderr
    assert "nothing was published" in refused.stderr

    good_file = tmp_path / "good.json"
    good_file.write_text(json.dumps(snapshots, ensure_ascii=False), "utf-8")
    done = publish_cmd(broker, s.topics.registers, "--file", str(good_file))
    assert done.returncode == 0, done.stderr

    cache = RegisterCache(KafkaReader(broker.bootstrap), s.topics.registers, RegisterBook())
    await cache.start()
    try:
        await cache.wait_ready(30)
        assert cache.book.tenants() == sorted(d["tenant_id"] for d in snapshots)
        assert {t: cache.book.version(t) for t in cache.book.tenants()} == {
            d["tenant_id"]: d["version"] for d in snapshots
        }
    finally:
        await cache.stop()
