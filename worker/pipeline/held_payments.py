"""A tenant loop's payments with no outcome yet, set aside: their mutation's outcome is
unknown (they wait the settle time, R14 decided 12-06), or Xledger could not be asked
(they wait a short while). The tenant's other payments go on meanwhile.

It also counts, per payment, the mutations whose outcome stayed unknown: after
UNKNOWN_LIMIT of them, each time found absent after the settle time, a payment is not sent
again (`tenant_poster.py`: its last lookup decides)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from worker import metrics
from worker.pipeline.poster_tools import Item

# A payment whose mutation got no answer within the deadline this often, each time found
# absent after the settle time, is not sent again: its next lookup decides (found: its
# receipt; absent: a dead letter, sent again by hand). An Xledger that never answers in
# time (or refuses a payment only after the deadline) must not be asked for ever.
UNKNOWN_LIMIT = 3


class HeldPayments:
    def __init__(self, tenant: str, clock: Callable[[], float]) -> None:
        self.tenant = tenant
        self.clock = clock  # the client's: `PostResult.retry_at` is on it
        # (items, not before, their outcome unknown)
        self._held: list[tuple[list[Item], float, bool]] = []
        self._unknowns: dict[str, int] = {}  # payment → mutations of it with unknown outcome

    @property
    def unsettled(self) -> bool:
        """Holds payments sent with an unknown outcome: a hand-over now is unclean (the
        next holder waits the settle time before it looks them up)."""
        return any(unknown for _, _, unknown in self._held)

    def hold(self, items: list[Item], not_before: float, unknown: bool) -> None:
        if not items:
            return
        self._held.append((items, not_before, unknown))
        metrics.POST_HELD.labels(self.tenant).inc(len(items))
        if unknown:
            for payment in {item.sub.payment_id for item in items}:
                self._unknowns[payment] = self._unknowns.get(payment, 0) + 1

    def next_due_in(self) -> float | None:
        """Seconds until the first held payments are due (None: none are held)."""
        if not self._held:
            return None
        return max(0.0, min(at for _, at, _ in self._held) - self.clock())

    def due(self) -> list[Item]:
        """The held payments whose time has come, no longer held."""
        now = self.clock()
        due = [entry for entry in self._held if entry[1] <= now]
        self._held = [entry for entry in self._held if entry[1] > now]
        items = [item for batch, _, _ in due for item in batch]
        if items:
            metrics.POST_HELD.labels(self.tenant).dec(len(items))
        return items

    def spent(self, items: list[Item]) -> list[Item]:
        """Of these, the payments whose mutations got no answer UNKNOWN_LIMIT times."""
        return [i for i in items if self._unknowns.get(i.sub.payment_id, 0) >= UNKNOWN_LIMIT]

    def answered(self, payments: Iterable[str]) -> None:
        """These payments have their outcome: nothing of them is counted any more."""
        for payment in payments:
            self._unknowns.pop(payment, None)

    def forget(self) -> None:
        """The loop has stopped (a hand-over): what it held is read again by the next holder."""
        held = sum(len(items) for items, _, _ in self._held)
        if held:
            metrics.POST_HELD.labels(self.tenant).dec(held)
        self._held = []
        self._unknowns = {}
