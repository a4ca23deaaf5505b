"""TenantPause: a tenant's posting paused or resumed by hand (`worker tenant pause|resume`),
on the compacted control topic (`flyt.xledger.tenant-control.v1`, keyed by tenant_id).

The newest record per tenant is its state: every worker reads the topic whole. A paused
tenant's payments are enriched and held, never dead-lettered or rejected for the pause;
a resume lets them be posted, each looked up in Xledger first (R14, R18)."""

from __future__ import annotations

from pydantic import Field

from worker.contracts.types import Id, Record, SchemaVersion, Timestamp


class TenantPause(Record):
    schema_version: SchemaVersion = 1
    tenant_id: Id
    paused: bool = Field(description="True: posting paused by hand; false: resumed")
    by: Id = Field(description="Who paused or resumed it (an actor with Økonomiinnstillinger)")
    roles: list[str] = Field(default_factory=list, description="The actor's roles (R13)")
    reason: str = Field(
        default="",
        max_length=1000,
        description="Why, in the actor's words (required to pause)",
    )
    at: Timestamp = Field(description="When it was paused or resumed")
