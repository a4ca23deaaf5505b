"""Publishing records for the embedded mode, the demo and tests (aiokafka)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer


def producer(bootstrap: str, one_record_batches: bool = True) -> AIOKafkaProducer:
    # One record per batch: Tansu reports a partition's end as the last batch's base
    # offset + 1, and the register cache's "caught up" relies on that end.
    extra = {"max_batch_size": 1} if one_record_batches else {}
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, **extra)


async def publish(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    one_record_batches: bool = True,
) -> int:
    p = producer(bootstrap, one_record_batches)
    await p.start()
    try:
        futures = [await p.send(topic, key=k, value=v) for k, v in records]
        for f in futures:
            await f
        return len(futures)
    finally:
        await p.stop()


def snapshot_records(snapshots: Iterable[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    return [
        (s["tenant_id"].encode(), json.dumps(s, ensure_ascii=False).encode()) for s in snapshots
    ]


def event_records(
    events: Iterable[dict[str, Any]], bad_lines: Iterable[str] = ()
) -> list[tuple[bytes | None, bytes]]:
    out: list[tuple[bytes | None, bytes]] = [
        (e["payment_id"].encode(), json.dumps(e, ensure_ascii=False).encode()) for e in events
    ]
    out += [(b"unreadable", line.encode("utf-8", "surrogateescape")) for line in bad_lines]
    return out
