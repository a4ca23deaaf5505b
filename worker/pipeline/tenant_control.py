"""Every worker's copy of the tenants paused by hand (`worker tenant pause|resume`), from the
compacted control topic (`flyt.xledger.tenant-control.v1`, keyed by tenant).

Read whole from the first offset, outside the consumer group (every worker must know
every tenant's state, whichever partitions it holds), then followed, as the register
cache reads the registers (`engine/follower.py`). `ready` is set once it has read up to
where the topic ended at start: a worker must not post before it knows who is paused.

`paused(tenant)` answers who paused it, when and why, or None. A change (paused, or
resumed) is announced to the `listeners` with the tenant and its pause (None: resumed);
they must not block. The gauges `xledger_tenant_paused{reason="manual"}` and
`flyt_tenant_paused_since_timestamp_seconds` follow the topic, on every worker alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from pydantic import ValidationError

from worker import logs, metrics
from worker.contracts import TenantPause
from worker.engine.backend import Reader
from worker.engine.follower import FollowedTopic
from worker.engine.records import Record

log = logs.get("worker.tenant_control")

# (tenant, its pause, or None when it was resumed)
Listener = Callable[[str, TenantPause | None], None]


class TenantControl(FollowedTopic):
    def __init__(self, reader: Reader, topic: str) -> None:
        super().__init__(reader, topic)
        self.listeners: list[Listener] = []
        self._paused: dict[str, TenantPause] = {}

    def paused(self, tenant: str) -> TenantPause | None:
        """Who paused this tenant's posting, when and why; None while it is not paused."""
        return self._paused.get(tenant)

    def paused_tenants(self) -> dict[str, TenantPause]:
        return dict(self._paused)

    def _caught_up(self) -> None:
        log.info("tenant_control_ready", paused=sorted(self._paused), topic=self.topic)

    def _apply(self, record: Record) -> None:
        tenant = (record.key or b"").decode("utf-8", "replace")
        if not record.value:  # a tombstone (Tansu: empty bytes): the key is gone, so no pause
            if tenant:
                self._set(tenant, None, None)
            return
        try:
            pause = TenantPause.model_validate_json(record.value)
        except (ValidationError, ValueError) as exc:
            # The state stays as it was: an unreadable record neither pauses nor resumes.
            log.error(
                "tenant_control_unreadable",
                partition=record.partition,
                offset=record.offset,
                error=str(exc)[:500],
            )
            return
        self._set(pause.tenant_id, pause if pause.paused else None, pause)

    def _set(self, tenant: str, pause: TenantPause | None, record: TenantPause | None) -> None:
        before = self._paused.get(tenant)
        if pause is None:
            self._paused.pop(tenant, None)
            metrics.XLEDGER_TENANT_PAUSED.labels(tenant, metrics.PAUSED_MANUAL).set(0)
            with contextlib.suppress(KeyError):
                metrics.TENANT_PAUSED_SINCE.remove(tenant)
        else:
            self._paused[tenant] = pause
            metrics.XLEDGER_TENANT_PAUSED.labels(tenant, metrics.PAUSED_MANUAL).set(1)
            metrics.TENANT_PAUSED_SINCE.labels(tenant).set(pause.at.timestamp())
        if before == pause:
            return  # no change: a resume of a tenant not paused, or a record read again
        if pause is not None:
            log.warning("tenant_paused_by_hand", tenant_id=tenant, by=pause.by, reason=pause.reason)
        else:
            log.info("tenant_resumed_by_hand", tenant_id=tenant, by=record.by if record else None)
        for listener in self.listeners:
            try:
                listener(tenant, pause)
            except Exception as exc:  # a listener's failure must not stop the control cache
                log.exception("tenant_control_listener_failed", tenant_id=tenant, error=str(exc))
