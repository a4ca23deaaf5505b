"""Which member holds which partitions (`worker/engine/assignment.py`): co-partitioned
topics together, shares that differ by at most one, and only the topics a member reads."""

from __future__ import annotations

from collections import Counter

from worker.engine.assignment import assign
from worker.engine.records import TopicPartition

PAYMENTS, REFUSED, SUBMISSIONS = "payments", "refused", "submissions"
ALL = [PAYMENTS, REFUSED, SUBMISSIONS]
COPARTITIONED = [[PAYMENTS, REFUSED], [SUBMISSIONS]]


def holder(dealt: dict[str, set[TopicPartition]], tp: TopicPartition) -> list[str]:
    return [m for m, tps in dealt.items() if tp in tps]


def test_partition_p_of_co_partitioned_topics_goes_to_one_member() -> None:
    members = {m: ALL for m in ("w-a", "w-b", "w-c")}
    dealt = assign(members, {t: 8 for t in ALL}, COPARTITIONED)
    for p in range(8):
        assert holder(dealt, TopicPartition(PAYMENTS, p)) == holder(
            dealt, TopicPartition(REFUSED, p)
        )
    # Round robin: the three members each hold some of the pair, not one all of it.
    assert len({holder(dealt, TopicPartition(PAYMENTS, p))[0] for p in range(8)}) == 3


def test_every_partition_is_held_by_exactly_one_member() -> None:
    members = {m: ALL for m in ("w-a", "w-b", "w-c")}
    counts = {PAYMENTS: 8, REFUSED: 8, SUBMISSIONS: 5}
    dealt = assign(members, counts, COPARTITIONED)
    held = Counter(tp for tps in dealt.values() for tp in tps)
    assert set(held) == {TopicPartition(t, p) for t, n in counts.items() for p in range(n)}
    assert set(held.values()) == {1}


def test_shares_differ_by_at_most_one_across_groups() -> None:
    """The next group is dealt on from where the last one stopped: 8 + 8 partitions over
    three members is 6, 5, 5, never 6, 6, 4."""
    members = {m: ALL for m in ("w-a", "w-b", "w-c")}
    dealt = assign(members, {t: 8 for t in ALL}, COPARTITIONED)
    per_member = {
        m: len({tp.partition for tp in tps if tp.topic == PAYMENTS})
        + len({tp.partition for tp in tps if tp.topic == SUBMISSIONS})
        for m, tps in dealt.items()
    }
    assert sorted(per_member.values()) == [5, 5, 6]
    for topic in (PAYMENTS, SUBMISSIONS):
        shares = [len([tp for tp in tps if tp.topic == topic]) for tps in dealt.values()]
        assert max(shares) - min(shares) <= 1, (topic, shares)


def test_a_member_gets_only_topics_it_subscribes_to() -> None:
    members = {"w-a": ALL, "w-b": [SUBMISSIONS]}
    dealt = assign(members, {t: 4 for t in ALL}, COPARTITIONED)
    assert {tp.topic for tp in dealt["w-b"]} == {SUBMISSIONS}
    assert {TopicPartition(t, p) for t in (PAYMENTS, REFUSED) for p in range(4)} <= dealt["w-a"]
    assert dealt["w-b"]  # it still shares what it reads
    held = Counter(tp for tps in dealt.values() for tp in tps)
    assert len(held) == 12 and set(held.values()) == {1}


def test_the_same_members_get_the_same_partitions_whatever_their_order() -> None:
    counts = {t: 6 for t in ALL}
    forward = assign({m: ALL for m in ("w-a", "w-b", "w-c")}, counts, COPARTITIONED)
    backward = assign({m: ALL for m in ("w-c", "w-b", "w-a")}, counts, COPARTITIONED)
    assert forward == backward


def test_a_topic_in_no_group_is_dealt_alone_and_short_topics_have_no_phantom_partitions() -> None:
    members = {m: [PAYMENTS, REFUSED, SUBMISSIONS] for m in ("w-a", "w-b")}
    dealt = assign(members, {PAYMENTS: 4, REFUSED: 2, SUBMISSIONS: 3}, [[PAYMENTS, REFUSED]])
    held = {tp for tps in dealt.values() for tp in tps}
    assert {tp for tp in held if tp.topic == REFUSED} == {
        TopicPartition(REFUSED, p) for p in (0, 1)
    }
    assert {tp for tp in held if tp.topic == SUBMISSIONS} == {
        TopicPartition(SUBMISSIONS, p) for p in range(3)
    }
    assert len(held) == 9


def test_no_members_hold_nothing_and_a_member_without_topics_holds_nothing() -> None:
    assert assign({}, {PAYMENTS: 4}, COPARTITIONED) == {}
    dealt = assign({"w-a": ALL, "w-idle": []}, {t: 4 for t in ALL}, COPARTITIONED)
    assert dealt["w-idle"] == set() and len(dealt["w-a"]) == 12
