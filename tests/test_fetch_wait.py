"""The worker's consumer waits at most FETCH_MAX_WAIT_MS for records, not faust's 1500 ms
(issue 13): on a broker that answers a fetch only when the wait is over, that wait was a
floor under every hop's latency."""

from __future__ import annotations

from worker.config import Settings
from worker.stream.faust_app import FETCH_MAX_WAIT_MS, make_app


async def test_the_worker_consumer_is_built_with_our_fetch_wait() -> None:
    app = make_app(Settings(broker_kind="tansu", metrics_port=None), "127.0.0.1:1")
    consumer = app.consumer
    client = consumer._thread._create_worker_consumer(consumer.transport)
    assert client._fetch_max_wait_ms == FETCH_MAX_WAIT_MS < 1500
