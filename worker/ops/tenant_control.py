"""Pausing a tenant's posting by hand, and resuming it (R13: Økonomiinnstillinger).

One record per change on the compacted control topic (`flyt.xledger.tenant-control.v1`,
keyed by tenant): the newest is the tenant's state, which every worker reads whole
(`worker/pipeline/tenant_control.py`). A paused tenant's payments are enriched and held;
on resume they are posted, each looked up in Xledger first. Every pause and resume, and
every refused one, is on the audit topic too."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import ValidationError

from worker.contracts import TenantPause
from worker.kafka_clients.connection import Bootstrap
from worker.ops import audit
from worker.ops.topic_reader import Record, read_topics, send

COMPACTED = {"cleanup.policy": "compact"}


def control_record(
    tenant: str, actor: str, roles: list[str], reason: str, *, paused: bool
) -> TenantPause:
    return TenantPause(
        tenant_id=tenant,
        paused=paused,
        by=actor,
        roles=roles,
        reason=reason,
        at=datetime.now(UTC),
    )


def states(records: list[Record]) -> dict[str, TenantPause]:
    """tenant → its newest control record (paused or resumed), as the workers read them;
    unreadable records change nothing, as in the workers."""
    out: dict[str, TenantPause] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        tenant = (r.key or b"").decode("utf-8", "replace")
        if not r.value:
            out.pop(tenant, None)
            continue
        try:
            pause = TenantPause.model_validate_json(r.value)
        except (ValidationError, ValueError):
            continue
        out[pause.tenant_id] = pause
    return out


def read_states(
    bootstrap: Bootstrap, topic: str, timeout_s: float = 30.0
) -> dict[str, TenantPause]:
    """The control topic is small (one record per tenant once compacted): read whole."""
    return states(read_topics(bootstrap, [], optional=[topic], timeout_s=timeout_s)[topic])


def write(bootstrap: Bootstrap, topic: str, record: TenantPause) -> str:
    """The record, acknowledged; the topic made (compacted) if this is the first."""
    audit.ensure_topic(bootstrap, topic, COMPACTED)
    value = record.model_dump_json().encode()
    [where] = send(bootstrap, [(topic, record.tenant_id.encode(), value, [])])
    return where


def describe(p: TenantPause) -> str:
    roles = ", ".join(p.roles) or "no role"
    verb = "paused" if p.paused else "resumed"
    why = f": {json.dumps(p.reason, ensure_ascii=False)}" if p.reason else ""
    return f"{verb} by {p.by} ({roles}) at {p.at.isoformat()}{why}"
