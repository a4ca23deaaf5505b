"""Which worker holds which partitions: co-partitioned, balanced.

Topics that share state are co-partitioned: partition p of each of them goes to the
same worker (the payment-status topic and the topic that carries refused payments back
to the owner of their state). Each group of co-partitioned topics is dealt out by
partition number, round robin over the members in a stable order; the next group
continues where the last one stopped, so that members end up with nearly equal shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.engine.records import TopicPartition


def assign(
    members: Mapping[str, Sequence[str]],
    partitions: Mapping[str, int],
    copartitioned: Sequence[Sequence[str]],
) -> dict[str, set[TopicPartition]]:
    """members: member id → topics it subscribes; partitions: topic → partition count;
    copartitioned: groups of topics dealt out together (a topic in no group is a group
    of its own). A topic a member does not subscribe to is never given to it."""
    result: dict[str, set[TopicPartition]] = {m: set() for m in members}
    order = sorted(members)
    if not order:
        return result
    grouped = {t for group in copartitioned for t in group}
    subscribed = sorted({t for topics in members.values() for t in topics})
    groups = [[t for t in g if t in partitions] for g in copartitioned]
    groups += [[t] for t in subscribed if t not in grouped and t in partitions]
    turn = 0
    for group in groups:
        if not group:
            continue
        for p in range(max(partitions[t] for t in group)):
            for _ in range(len(order)):  # the next member that subscribes to the group
                member = order[turn % len(order)]
                turn += 1
                topics = [t for t in group if t in members[member] and p < partitions[t]]
                if topics:
                    result[member].update(TopicPartition(t, p) for t in topics)
                    break
    return result
