"""What the worker remembers per payment, in the state stores of the payment's partition
(the partition its Betalt event arrived on):

- `handled` (R17): the payment's outcome so far, `submitted` or `rejected`; a second Betalt
  event for it is a duplicate. Never deleted (a batched store: one record per batch).
- `pending` (R16): a rejected payment that a newer register snapshot may cure, with its
  Betalt event and the snapshot version it was last evaluated against; deleted once it
  no longer waits.

Keys name tenant and payment: two tenants may use the same payment id.
"""

from __future__ import annotations

from typing import Any

from worker.engine.records import Record, StateChange
from worker.engine.state import PartitionStore
from worker.pipeline.topics import HANDLED, PENDING

SUBMITTED = "submitted"
REJECTED = "rejected"

Key = tuple[str, str]  # (tenant, payment)
_SEP = "\x1f"  # the unit separator: in no tenant or payment id


def store_key(key: Key) -> str:
    return f"{key[0]}{_SEP}{key[1]}"


def split_key(key: str) -> Key:
    tenant, _, payment = key.partition(_SEP)
    return tenant, payment


def pending_entry(event: str, version: int | None, source: str) -> dict[str, Any]:
    """A waiting rejection: the Betalt event (JSON), the snapshot version it was evaluated
    against (None: before any snapshot), and where the event was read (dead letters)."""
    return {"event": event, "version": version, "source": source}


class PaymentStates:
    """The payment state of one partition."""

    def __init__(self, partition: int, handled: PartitionStore, pending: PartitionStore) -> None:
        self.partition = partition
        self.handled = handled
        self.pending = pending

    def handled_as(self, key: Key) -> str | None:
        state: str | None = self.handled.get(store_key(key))
        return state

    def waiting_entry(self, key: Key) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = self.pending.get(store_key(key))
        return entry

    def waiting(self, tenant: str) -> list[tuple[str, dict[str, Any]]]:
        """(payment, entry) for each of the tenant's rejections waiting for R16."""
        out = []
        for k, entry in self.pending.items():
            t, payment = split_key(k)
            if t == tenant:
                out.append((payment, entry))
        return out

    def waiting_tenants(self) -> set[str]:
        return {split_key(k)[0] for k, _ in self.pending.items()}

    def set_handled(self, key: Key, state: str, source: Record | None = None) -> StateChange:
        return StateChange(HANDLED, self.partition, store_key(key), state, source)

    def set_pending(
        self, key: Key, entry: dict[str, Any] | None, source: Record | None = None
    ) -> StateChange:
        return StateChange(PENDING, self.partition, store_key(key), entry, source)
