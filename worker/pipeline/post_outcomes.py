"""What the post stage remembers per payment: the outcome it gave it (R14, decided 12-06:
once a payment has an outcome, it gets no other).

A store of the submissions partition (`outcomes`, compacted: one record per payment, the
newest kept), written with the outcome's own record (receipt, rejection or dead letter) in
one `write`, so a submission read again after a crash or a hand-over finds it:
- the record it answered (or an older one), read again: nothing more;
- a newer submission a person sent by hand (`dlq replay`, `rejections resend`: R13): looked
  up and posted as usual (a posted payment is found, and its receipt says so);
- posted: nothing more, ever (its receipt is on the broker);
- dead-lettered: nothing more, but by hand;
- rejected (Xledger refused its content): a newer submission of it (R16 after a new
  snapshot, R18) is posted as usual.

An entry is kept while its submission can be read again: until the submissions topic's
retention (and a day's margin) has passed, then deleted (a tombstone).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.contracts.headers import REPLAY_COUNT, RESEND_BY
from worker.engine.records import Record, StateChange
from worker.engine.state import PartitionStore
from worker.pipeline.payment_state import store_key
from worker.pipeline.topics import OUTCOMES

POSTED = "posted"
REJECTED = "rejected"
DEAD_LETTERED = "dead_lettered"
MARGIN_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    offset: int  # the submission record it answered
    at: float  # when (epoch seconds)

    def encode(self) -> str:
        return f"{self.kind}:{self.offset}:{int(self.at)}"

    @classmethod
    def decode(cls, value: str) -> Outcome:
        kind, offset, at = value.rsplit(":", 2)
        return cls(kind, int(offset), float(at))


def by_hand(record: Record) -> bool:
    """A submission a person sent again (R13): a replayed dead letter, or a resend."""
    return record.header(REPLAY_COUNT) is not None or record.header(RESEND_BY) is not None


def answered(outcome: Outcome | None, record: Record) -> bool:
    """True when this submission record needs no work: its payment's outcome stands."""
    if outcome is None:
        return False
    if record.offset <= outcome.offset:  # the record it answered, or an older one, again
        return True
    if by_hand(record):
        return False
    return outcome.kind in (POSTED, DEAD_LETTERED)


class PostOutcomes:
    """The outcomes of one submissions partition."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store

    @property
    def partition(self) -> int:
        return self.store.partition

    def get(self, tenant: str, payment: str) -> Outcome | None:
        value = self.store.get(store_key((tenant, payment)))
        return Outcome.decode(value) if value else None

    def change(self, tenant: str, payment: str, outcome: Outcome) -> StateChange:
        return StateChange(OUTCOMES, self.partition, store_key((tenant, payment)), outcome.encode())

    def expired(self, now: float, retention_s: float) -> list[StateChange]:
        """Tombstones for the entries whose submissions the broker no longer has."""
        cutoff = now - retention_s - MARGIN_S
        return [
            StateChange(OUTCOMES, self.partition, key, None)
            for key, value in self.store.items()
            if Outcome.decode(value).at < cutoff
        ]
