"""The snapshots in force: the newest valid version per tenant (contracts.md, R13).

Pure bookkeeping shared by the offline `enrich` command and the streaming register cache.
A refused snapshot leaves the tenant's previous valid snapshot in force.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.contracts.register_snapshot import RegisterSnapshot
from worker.core.endpoints import UrlPolicy
from worker.core.register_index import RegisterIndex
from worker.core.snapshot_rules import SnapshotRefusal, check_snapshot


@dataclass(frozen=True, slots=True)
class Offer:
    tenant_id: str
    version: int
    accepted: bool
    refusals: tuple[SnapshotRefusal, ...] = ()


class RegisterBook:
    def __init__(self, policy: UrlPolicy | None = None) -> None:
        self.policy = policy or UrlPolicy()
        self._indexes: dict[str, RegisterIndex] = {}

    def offer(self, snapshot: RegisterSnapshot) -> Offer:
        current = self._indexes.get(snapshot.tenant_id)
        # R13 compares with the snapshot in force, read back whole for this (not kept).
        previous = current.read_snapshot() if current else None
        refusals = check_snapshot(snapshot, previous, self.policy)
        if refusals:
            return Offer(snapshot.tenant_id, snapshot.version, False, tuple(refusals))
        self._indexes[snapshot.tenant_id] = RegisterIndex(snapshot)
        return Offer(snapshot.tenant_id, snapshot.version, True)

    def index(self, tenant_id: str) -> RegisterIndex | None:
        return self._indexes.get(tenant_id)

    def version(self, tenant_id: str) -> int | None:
        index = self._indexes.get(tenant_id)
        return index.version if index else None

    def tenants(self) -> list[str]:
        return sorted(self._indexes)

    def __len__(self) -> int:
        return len(self._indexes)
