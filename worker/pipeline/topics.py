"""The worker's topics and state stores, created explicitly with their partition counts
and configs (contracts.md).

Every topic gets the broker profile's replication factor and `min.insync.replicas`: with
3 copies, 2 in sync and producers on `acks=all`, a lost broker loses no payment. The
topics that hold work not done yet (submissions, refused payments on their way back to
their state's owner, dead letters) and those reconcile reads (payment status, receipts,
rejections) keep it for `retention_days` (63 by default): longer than any pause a tenant
may sit out before its payments are posted, and than reconcile's look-back
(`worker/topic_check.py`). State changelogs and the pauses by hand are compacted (the
newest record per key is kept for ever). In production the payment-status topic is
Flyt's: the start-up check says when its retention is shorter.
"""

from __future__ import annotations

from worker.config import Settings
from worker.engine.state import StoreSpec
from worker.engine.topics import TopicSpec

# Records the worker itself must always be able to write, whatever their input's size:
# a dead letter (the input plus headers) and a state entry (R16 keeps the event). Inputs
# are held to the broker's default (1 MiB); these topics take four times that.
LARGE_RECORD_BYTES = 4 * 1024 * 1024
_LARGE = {"max.message.bytes": str(LARGE_RECORD_BYTES)}

HANDLED = "handled"  # payment → its outcome so far (R17), never deleted
PENDING = "pending"  # payment → its Betalt event, while a rejection waits for R16
POSTING = "posting"  # the post stage's note on the partition's holder (posting_lease.py)
OUTCOMES = "outcomes"  # payment → the post stage's outcome for it (post_outcomes.py)


def refused_topic(s: Settings) -> str:
    """Payments Xledger refused, sent back to the holder of their state (R14, R16):
    co-partitioned with the payment-status topic."""
    return f"{s.app_id}-refused"


def changelog_topic(s: Settings, store: str) -> str:
    return f"{s.app_id}-{store}-changelog"


def stores(s: Settings) -> tuple[StoreSpec, ...]:
    t = s.topics
    return (
        StoreSpec(HANDLED, t.payments, changelog_topic(s, HANDLED), batched=True),
        StoreSpec(PENDING, t.payments, changelog_topic(s, PENDING)),
        StoreSpec(POSTING, t.submissions, changelog_topic(s, POSTING)),
        StoreSpec(OUTCOMES, t.submissions, changelog_topic(s, OUTCOMES)),
    )


def replication_config(s: Settings) -> dict[str, str]:
    return {"min.insync.replicas": str(s.profile().min_insync_replicas)}


def retention_config(s: Settings) -> dict[str, str]:
    return {"retention.ms": str(int(s.retention_days * 24 * 3600 * 1000))}


def topic_specs(s: Settings) -> list[TopicSpec]:
    t = s.topics
    n = s.partitions
    rf = s.profile().replication_factor
    isr = replication_config(s)
    keep = retention_config(s)
    compacted = {"cleanup.policy": "compact", **_LARGE, **isr}
    return [
        TopicSpec(t.payments, n, {**keep, **isr}, rf),
        # Compacted: the newest snapshot per tenant is what matters; every worker reads all.
        TopicSpec(t.registers, n, {"cleanup.policy": "compact", **isr}, rf),
        TopicSpec(t.control, 1, {"cleanup.policy": "compact", **isr}, rf),  # paused by hand
        TopicSpec(t.submissions, n, {**keep, **isr}, rf),
        # The outcomes keep as long as the work they answer: reconcile reads them together.
        TopicSpec(t.receipts, n, {**keep, **isr}, rf),
        TopicSpec(t.rejections, n, {**keep, **isr}, rf),
        TopicSpec(t.dlq, n, {**_LARGE, **keep, **isr}, rf),
        TopicSpec(refused_topic(s), n, {**_LARGE, **keep, **isr}, rf),
        *(TopicSpec(spec.changelog, n, compacted, rf) for spec in stores(s)),
    ]
