"""`worker tenant pause|resume` (issue 28) on a real broker: Økonomiinnstillinger only, every
change and every refusal audited, and every worker's control cache (read whole, then
followed) knows who paused a tenant, when and why; `status` says so."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from tests.brokers import Broker
from tests.factories import snapshot_dict
from tests.ops.helpers import acli, json_lines, ops_settings, records, send
from tests.waiting import until_async
from worker.config import Settings
from worker.contracts import TenantPause
from worker.devenv.feed import snapshot_records
from worker.engine.topics import ensure_topics
from worker.pipeline.tenant_control import TenantControl
from worker.pipeline.topics import topic_specs
from worker.pipeline.wiring import kafka_backend

pytestmark = pytest.mark.integration

A, B = "t-pause-a", "t-pause-b"
WHO = ("--actor", "u-okinn", "--role", "Økonomiinnstillinger")
WHY = "Dobbelt bilag i Xledger, sak 4711: vent til det er reversert"


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
async def world(broker: Broker) -> Settings:
    s = ops_settings(broker, "pause")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    for tenant in (A, B):
        [(key, value)] = snapshot_records([snapshot_dict(tenant_id=tenant)])
        await send(broker, s.topics.registers, key, value)
    return s


@pytest.fixture
async def control(world: Settings) -> AsyncIterator[tuple[TenantControl, list[tuple[str, bool]]]]:
    """A worker's control cache, as `Pipeline` runs it, with a listener that notes changes."""
    assert world.bootstrap
    cache = TenantControl(kafka_backend(world, world.bootstrap).reader(), world.topics.control)
    changes: list[tuple[str, bool]] = []
    cache.listeners.append(lambda tenant, pause: changes.append((tenant, pause is not None)))
    await cache.start()
    try:
        await cache.wait_ready(30)
        yield cache, changes
    finally:
        await cache.stop()


async def test_pause_and_resume_reach_every_worker_with_who_when_and_why(
    broker: Broker, world: Settings, control: tuple[TenantControl, list[tuple[str, bool]]]
) -> None:
    cache, changes = control
    s = world
    assert cache.paused(A) is None

    # R13: Økonomi (a manual transfer's role) is not enough; refused and audited.
    refused = await acli(
        broker, s, "tenant", "pause", A, "--reason", WHY, "--actor", "u-9", "--role", "Økonomi"
    )
    assert refused.returncode == 4 and "Økonomiinnstillinger" in refused.stderr
    unknown = await acli(broker, s, "tenant", "pause", "t-typo", "--reason", WHY, *WHO)
    assert unknown.returncode == 3 and "t-typo" in unknown.stderr
    not_paused = await acli(broker, s, "tenant", "resume", A, *WHO)
    assert not_paused.returncode == 3

    done = await acli(broker, s, "tenant", "pause", A, "--reason", WHY, *WHO)
    assert done.returncode == 0, done.stderr

    async def seen() -> TenantPause | None:
        return cache.paused(A)

    pause = await until_async(seen, 10, "the pause in the worker's control cache")
    assert (pause.by, pause.reason, pause.roles) == ("u-okinn", WHY, ["Økonomiinnstillinger"])
    assert cache.paused(B) is None and changes == [(A, True)]
    assert gauge("xledger_tenant_paused", tenant=A, reason="manual") == 1
    assert gauge("flyt_tenant_paused_since_timestamp_seconds", tenant=A) == pause.at.timestamp()

    # A worker that starts now reads the topic whole: A is paused before it is ready.
    assert s.bootstrap
    late = TenantControl(kafka_backend(s, s.bootstrap).reader(), s.topics.control)
    await late.start()
    try:
        await late.wait_ready(30)
        assert late.paused(A) == pause
    finally:
        await late.stop()

    status = await acli(broker, s, "status", "--json", "--tenant", A, "--tenant", B)
    assert status.returncode == 0, status.stderr
    by = {x["tenant_id"]: x for x in json_lines(status.stdout)}
    assert by[A]["paused"] == "yes" and by[A]["paused_by_hand"]["by"] == "u-okinn"
    assert by[A]["paused_by_hand"]["reason"] == WHY and WHY in by[A]["paused_why"]
    assert by[B]["paused_by_hand"] is None and by[B]["paused"] != "yes"
    text = await acli(broker, s, "status", "--tenant", A)
    assert "paused    yes: by hand by u-okinn" in text.stdout

    back = await acli(broker, s, "tenant", "resume", A, "--reason", "reversert", *WHO)
    assert back.returncode == 0, back.stderr

    async def resumed() -> bool:
        return cache.paused(A) is None

    await until_async(resumed, 10, "the resume in the worker's control cache")
    assert changes == [(A, True), (A, False)]
    assert gauge("xledger_tenant_paused", tenant=A, reason="manual") == 0
    assert gauge("flyt_tenant_paused_since_timestamp_seconds", tenant=A) is None

    trail = [r.json() or {} for r in records(broker, s.topics.audit)[s.topics.audit]]
    assert [(x["action"], x["outcome"], x["actor"]) for x in trail] == [
        ("tenant.pause", "refused", "u-9"),
        ("tenant.pause", "done", "u-okinn"),
        ("tenant.resume", "done", "u-okinn"),
    ]
    assert trail[1]["items"][0]["tenant_id"] == A and trail[1]["reason"] == WHY


async def test_an_unreadable_control_record_changes_nothing(
    broker: Broker, world: Settings, control: tuple[TenantControl, list[tuple[str, bool]]]
) -> None:
    cache, changes = control
    done = await acli(broker, world, "tenant", "pause", B, "--reason", "test", *WHO)
    assert done.returncode == 0, done.stderr
    await send(broker, world.topics.control, B.encode(), json.dumps({"paused": False}).encode())
    await send(broker, world.topics.control, A.encode(), b"\xff not json")
    # A record after them: once the cache has it, it has read past the unreadable two.
    marker = await acli(broker, world, "tenant", "pause", A, "--reason", "marker", *WHO)
    assert marker.returncode == 0, marker.stderr

    async def paused_a() -> bool:
        return cache.paused(A) is not None

    await until_async(paused_a, 10, "A paused after the unreadable records")
    assert cache.paused(B) is not None and changes == [(B, True), (A, True)]
