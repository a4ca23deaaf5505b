"""Publishing records for the embedded mode, the demo and tests (the engine's producer)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from worker.engine.producer import KafkaProducer
from worker.kafka_clients.connection import Bootstrap

MAX_REQUEST_BYTES = 8 * 1024 * 1024  # tests publish records larger than a broker takes


def producer(bootstrap: Bootstrap, one_record_batches: bool = True) -> KafkaProducer:
    # One record per batch: Tansu reports a partition's end as the last batch's base
    # offset + 1, so tests that compare committed and end offsets need one-record batches.
    return KafkaProducer(
        bootstrap,
        idempotent=False,
        max_request_size=MAX_REQUEST_BYTES,
        linger_ms=0,
        one_record_batches=one_record_batches,
    )


async def publish(
    bootstrap: Bootstrap,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    one_record_batches: bool = True,
) -> int:
    p = producer(bootstrap, one_record_batches)
    await p.start()
    try:
        futures = [await p.send(topic, k, v) for k, v in records]
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
