"""`status`: per tenant, the snapshot in force and who published it, refused snapshots,
paused or not (from the worker's metrics, or the evidence on the topics), rejections
waiting, dead letters and the last receipt, on a real broker."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.brokers import Broker
from tests.factories import event_dict, snapshot_dict, with_register_gap
from tests.ops.helpers import cli, json_lines, ops_settings, rejection_of, send
from worker.config import Settings
from worker.contracts import DlqHeaders
from worker.devenv.feed import snapshot_records
from worker.engine.topics import ensure_topics
from worker.pipeline.topics import topic_specs

pytestmark = pytest.mark.integration


A, B = "t-a", "t-b"  # A: rejections waiting, a refused snapshot, a dead letter; B: posting


def snapshot(tenant: str) -> dict[str, Any]:
    return snapshot_dict(tenant_id=tenant)


def gap_event(n: int) -> dict[str, Any]:
    """A's Betalt payment n, rejected MISSING_ACCOUNT (a register gap)."""
    return with_register_gap(event_dict(tenant_id=A, payment_id=f"P-A-{n}", event_id=f"e-{n}"))


def receipt(tenant: str, payment: str) -> bytes:
    return json.dumps(
        {
            "schema_version": 1,
            "tenant_id": tenant,
            "payment_id": payment,
            "lines": [{"extIdentifier": f"flyt:{tenant}:{payment}:1", "dbId": 1}],
            "posted_at": datetime.now(UTC).isoformat(),
            "batch_id": "b-1",
        }
    ).encode()


def credits_letter(s: Settings, tenant: str) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC).isoformat()
    return DlqHeaders.model_validate(
        {
            "dlq.reason": "insufficient_credits",
            "dlq.error_class": "Xledger INSUFFICIENT_CREDITS",
            "dlq.error_message": "out of credits",
            "dlq.stage": "post",
            "dlq.original_topic": s.topics.submissions,
            "dlq.original_partition": 0,
            "dlq.original_offset": 3,
            "dlq.attempts": 8,
            "dlq.first_failed_at": now,
            "dlq.last_failed_at": now,
        }
    ).to_kafka()


@pytest.fixture
async def tenants(broker: Broker) -> Settings:
    s = ops_settings(broker, "status")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    t = s.topics
    a = snapshot(A)
    broken = copy.deepcopy(a)
    broken["version"] = 2
    broken["registers"]["betalingstype"].append(
        copy.deepcopy(broken["registers"]["betalingstype"][0])
    )
    for snap in (a, snapshot(B), broken):
        [(key, value)] = snapshot_records([snap])
        await send(broker, t.registers, key, value)
    waiting_a, waiting_b, posted = gap_event(1), gap_event(2), gap_event(3)
    for e in (waiting_a, waiting_b, posted):
        await send(broker, t.rejections, e["payment_id"].encode(), rejection_of(e, a))
    await send(broker, t.receipts, A.encode(), receipt(A, posted["payment_id"]))
    await send(broker, t.receipts, B.encode(), receipt(B, "P-V-1"))
    await send(broker, t.receipts, B.encode(), receipt(B, "P-V-2"))
    body = json.dumps({"tenant_id": A, "payment_id": "P-L-9"}).encode()
    await send(broker, t.dlq, A.encode(), body, credits_letter(s, A))
    return s


async def test_status_per_tenant_from_the_topics(broker: Broker, tenants: Settings) -> None:
    out = cli(broker, tenants, "status", "--json")
    assert out.returncode == 0, out.stderr
    by = {x["tenant_id"]: x for x in json_lines(out.stdout)}
    assert set(by) == {A, B}
    lil, ves = by[A], by[B]
    assert lil["snapshot"]["version"] == 1  # v2 breaks R7: refused, v1 stays in force
    assert lil["snapshot"]["published_by"] == snapshot(A)["published_by"]["user_id"]
    [refused] = lil["refused_since"]
    assert refused["version"] == 2 and any("R7" in r for r in refused["reasons"])
    assert lil["waiting"] == 2 and lil["waiting_by_code"] == {"MISSING_ACCOUNT": 2}
    assert lil["dead_letters"] == 1 and lil["dead_letters_by_reason"] == {"insufficient_credits": 1}
    assert lil["paused"] == "likely" and "insufficient_credits" in lil["paused_why"]
    assert lil["last_receipt"]["payment_id"] == gap_event(3)["payment_id"]
    assert ves["waiting"] == 0 and ves["dead_letters"] == 0 and ves["paused"] == "unknown"
    assert ves["last_receipt"]["payment_id"] == "P-V-2"

    text = cli(broker, tenants, "status", "--tenant", A)
    assert text.returncode == 0
    assert "snapshot  v1" in text.stdout and "refused   v2" in text.stdout
    assert "waiting   2 rejected payment(s): MISSING_ACCOUNT 2" in text.stdout
    nobody = cli(broker, tenants, "status", "--tenant", "t-nobody")
    assert nobody.returncode == 3 and "no tenant t-nobody" in nobody.stderr


@contextlib.contextmanager
def serving(text: str, content_type: str = "text/plain; version=0.0.4") -> Iterator[str]:
    """An HTTP server on loopback answering every GET with `text`; its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def worker_metrics(paused: dict[tuple[str, str], float]) -> str:
    """A worker's /metrics as the worker serves it: xledger_tenant_paused per (tenant, reason)."""
    lines = [
        "# HELP xledger_tenant_paused 1 while a tenant's posting is paused",
        "# TYPE xledger_tenant_paused gauge",
    ]
    lines += [
        f'xledger_tenant_paused{{reason="{r}",tenant="{t}"}} {v}' for (t, r), v in paused.items()
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def metrics_url() -> Iterator[str]:
    """A worker's /metrics: A paused for credits."""
    text = worker_metrics({(A, "credits"): 1.0, (A, "token"): 0.0, (B, "credits"): 0.0})
    with serving(text) as url:
        yield url + "/metrics"


async def test_paused_is_read_from_the_workers_metrics_when_given(
    broker: Broker, tenants: Settings, metrics_url: str
) -> None:
    out = cli(broker, tenants, "status", "--json", "--metrics", metrics_url)
    assert out.returncode == 0, out.stderr
    by = {x["tenant_id"]: x for x in json_lines(out.stdout)}
    assert by[A]["paused"] == "yes" and "credits" in by[A]["paused_why"]
    assert by[B]["paused"] == "no"
    gone = cli(broker, tenants, "status", "--metrics", "http://127.0.0.1:1/metrics")
    assert gone.returncode == 1 and "cannot read the worker's metrics" in gone.stderr


async def test_status_of_two_replicas_shows_a_tenant_paused_on_either_as_paused(
    broker: Broker, tenants: Settings
) -> None:
    """Two replicas: A is paused (credits) only on the first, B (token) only on the second;
    neither replica alone knows both. Prometheus' answer is read the same way."""
    first = worker_metrics({(A, "credits"): 1.0, (B, "token"): 0.0})
    second = worker_metrics({(A, "credits"): 0.0, (B, "token"): 1.0})
    with serving(first) as one, serving(second) as two:
        out = cli(
            broker,
            tenants,
            "status",
            "--json",
            "--metrics",
            one + "/metrics",
            "--metrics",
            two + "/metrics",
        )
        alone = cli(broker, tenants, "status", "--json", "--metrics", one + "/metrics")
        half = cli(
            broker,
            tenants,
            "status",
            "--json",
            "--metrics",
            one + "/metrics",
            "--metrics",
            "http://127.0.0.1:1/metrics",
        )
    assert out.returncode == 0, out.stderr
    by = {x["tenant_id"]: x for x in json_lines(out.stdout)}
    assert by[A]["paused"] == "yes" and by[A]["paused_on"] == {"credits": [one + "/metrics"]}
    assert by[B]["paused"] == "yes" and by[B]["paused_on"] == {"token": [two + "/metrics"]}
    assert "token on " + two in by[B]["paused_why"]
    only = {x["tenant_id"]: x["paused"] for x in json_lines(alone.stdout)}
    assert only == {A: "yes", B: "no"}  # one replica alone does not know B
    # A replica that cannot be read is named, and the status goes on with the others.
    assert half.returncode == 0 and "127.0.0.1:1" in half.stderr
    assert {x["tenant_id"]: x["paused"] for x in json_lines(half.stdout)}[A] == "yes"

    answer = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"tenant": A, "reason": "credits"}, "value": [0, "1"]},
                {"metric": {"tenant": B, "reason": "token"}, "value": [0, "1"]},
            ],
        },
    }
    with serving(json.dumps(answer), "application/json") as prometheus:
        via = cli(broker, tenants, "status", "--json", "--prometheus", prometheus)
    assert via.returncode == 0, via.stderr
    assert {x["tenant_id"]: x["paused"] for x in json_lines(via.stdout)} == {A: "yes", B: "yes"}
