"""Reading topics for the operator tools (kafka-python), at production size.

Assigned partitions and no group id: inspecting a topic never joins, moves or commits a
consumer group, so it cannot disturb the worker. A read takes each partition's end when
it starts and reads up to it: what arrives later is left for the next command.

A period's start becomes an offset per partition (`offsets_for_times`): the read starts at
the first record at or after it, so a `--since 1h` over months of records fetches an
hour's. A partition's read stops at its end, or once its records pass the period's end by
`END_SLACK` (broker times are not strictly ordered within a partition: producers' clocks;
records are judged one by one against the period). Records are streamed (`scan`): the
caller keeps what it needs (counts, the page it shows), never the topic. (Tansu answers a
time with the offset of its first batch appended after it, which reads more but misses
nothing.)

Only the small compacted topics (registers, the tenant control topic, the audit trail) are
read whole into memory (`read_topics`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.kafka_clients.connection import Bootstrap
from worker.kafka_clients.sync_clients import BrokerError as KafkaError
from worker.kafka_clients.sync_clients import (
    ConfigResource,
    ConfigResourceType,
    KafkaConsumer,
    TopicPartition,
)
from worker.ops import kafka_clients
from worker.ops.errors import BrokerUnavailable, TopicMissing
from worker.ops.when import Period

END_SLACK = timedelta(minutes=5)  # records written this much out of time order are still read
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def position(self) -> str:
        return f"{self.partition}@{self.offset}"

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def json(self) -> dict[str, Any] | None:
        """The value as a JSON object, or None where it is not one."""
        if self.value is None:
            return None
        try:
            body = json.loads(self.value)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        return body if isinstance(body, dict) else None


@dataclass(frozen=True)
class Gap:
    """Records of the period a partition may no longer hold: the broker deleted its records
    before `log_start` (retention), and the oldest one it keeps is already in the period."""

    topic: str
    partition: int
    log_start: int
    oldest_kept_at: datetime | None

    def describe(self) -> str:
        kept = ""
        if self.oldest_kept_at is not None:
            kept = f", the oldest kept is from {self.oldest_kept_at.isoformat()}"
        return (
            f"{self.topic} partition {self.partition}: offsets before {self.log_start} were "
            f"deleted (retention){kept}"
        )


@dataclass
class ReadStats:
    """What a read fetched: every record the consumer handed over is counted, kept or not.
    `whole` (after a read with `last`): every partition was read from its first offset."""

    fetched: dict[str, int] = field(default_factory=dict)
    whole: bool = True
    gaps: list[Gap] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.fetched.values())

    def describe(self) -> str:
        read = ", ".join(f"{n:,} of {t}" for t, n in self.fetched.items()) or "nothing"
        return f"read {read} in {self.seconds:.1f} s"


Say = Callable[[str], None]


def _record(r: Any) -> Record:
    headers = list(r.headers or [])
    return Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, headers)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _existing(consumer: KafkaConsumer, bootstrap: Bootstrap) -> set[str]:
    try:
        # The list of every topic: asking for one by name could make a broker that
        # auto-creates topics create it.
        return set(consumer.topics())
    except KafkaError as exc:
        raise BrokerUnavailable(f"the broker at {bootstrap} did not answer: {exc}") from None


def _partitions(
    consumer: KafkaConsumer, bootstrap: Bootstrap, topics: Iterable[str], optional: Iterable[str]
) -> list[TopicPartition]:
    wanted = list(dict.fromkeys([*topics, *optional]))
    may_miss = set(optional)
    existing = _existing(consumer, bootstrap)
    missing = [t for t in wanted if t not in existing and t not in may_miss]
    if missing:
        raise TopicMissing(missing, bootstrap)
    return [
        TopicPartition(t, p)
        for t in wanted
        if t in existing
        for p in sorted(consumer.partitions_for_topic(t) or ())
    ]


def _by_time(
    consumer: KafkaConsumer, tps: list[TopicPartition], moment: datetime
) -> dict[TopicPartition, tuple[int, int] | None]:
    """tp → (offset, timestamp) of its first record at or after `moment`; None where none
    is. (A broker that answers a timestamp of -1 knows no such record either, but names
    an offset at or before it: reading from there is safe, the records are judged.)"""
    found = consumer.offsets_for_times({tp: max(0, _ms(moment)) for tp in tps})
    return {tp: (o.offset, o.timestamp) if o is not None else None for tp, o in found.items()}


@dataclass(frozen=True)
class _Range:
    start: int
    stop: int  # exclusive


def _ranges(
    consumer: KafkaConsumer,
    tps: list[TopicPartition],
    period: Period,
    stats: ReadStats,
    last: int | None,
    retention: Callable[[str], int | None],
) -> dict[TopicPartition, _Range]:
    firsts = consumer.beginning_offsets(tps)
    ends = consumer.end_offsets(tps)
    starts = {tp: max(firsts[tp], ends[tp] - last) if last else firsts[tp] for tp in tps}
    stats.whole = stats.whole and all(starts[tp] == firsts[tp] for tp in tps)
    if period.start is not None:
        for tp, found in _by_time(consumer, tps, period.start).items():
            if found is None:
                starts[tp] = ends[tp]  # nothing at or after the start
            else:
                starts[tp] = max(starts[tp], found[0])
            gap = gap_of(tp, firsts[tp], ends[tp], found, period.start, retention)
            if gap is not None:
                stats.gaps.append(gap)
    return {tp: _Range(starts[tp], ends[tp]) for tp in tps}


def gap_of(
    tp: TopicPartition,
    first: int,
    end: int,
    found: tuple[int, int] | None,
    start: datetime,
    retention: Callable[[str], int | None],
) -> Gap | None:
    """Whether records deleted from this partition may have been of the period: some were
    deleted (its log start is past 0), and either the oldest kept one is already in the
    period or none is kept; unless the topic's retention is short of the period's start
    (retention deletes only records older than it)."""
    if first == 0:
        return None
    if found is not None and found[0] > first:
        return None  # a record before the period is still kept: nothing of it was deleted
    if found is None and end > first:
        return None  # every record kept is older than the period, the deleted ones too
    keep_ms = retention(tp.topic)
    if (
        keep_ms is not None
        and keep_ms >= 0
        and start >= datetime.now(UTC) - timedelta(milliseconds=keep_ms)
    ):
        return None
    oldest = datetime.fromtimestamp(found[1] / 1000, UTC) if found and found[1] >= 0 else None
    return Gap(tp.topic, tp.partition, first, oldest)


def _retention_of(bootstrap: Bootstrap) -> Callable[[str], int | None]:
    """topic → its retention.ms (-1: for ever), asked of the cluster once per topic when a
    gap must be judged; None where the cluster does not say (then a gap is a gap)."""
    known: dict[str, int | None] = {}

    def retention(topic: str) -> int | None:
        if topic not in known:
            known[topic] = _ask_retention(bootstrap, topic)
        return known[topic]

    return retention


def _ask_retention(bootstrap: Bootstrap, topic: str) -> int | None:
    try:
        admin = kafka_clients.admin(bootstrap)
    except BrokerUnavailable:
        return None
    try:
        answer = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    except (KafkaError, ValueError):
        return None
    finally:
        admin.close()
    data = (answer.get("topic") or {}).get(topic) or {} if isinstance(answer, dict) else {}
    value = data.get("retention.ms")
    if isinstance(value, dict):
        value = value.get("value")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def scan(
    bootstrap: Bootstrap,
    topics: Iterable[str],
    *,
    period: Period | None = None,
    optional: Iterable[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Say | None = None,
    stats: ReadStats | None = None,
    last: int | None = None,
) -> Iterator[Record]:
    """The records of `topics` whose broker time is in `period` (default: all), streamed:
    in offset order per partition, partitions interleaved. With `last`, only each
    partition's last `last` offsets (the newest records, for "the N newest").

    Each partition is read from the first offset at or after the period's start to its
    end as the read starts (or where its records pass the period's end). `timeout_s` is
    how long the broker may keep the read waiting without handing over anything. A
    missing topic raises TopicMissing, except those in `optional`, which read as empty.
    `stats` (given) counts every record fetched and notes the partitions whose retention
    has deleted records of the period."""
    period = period or Period()
    stats = stats if stats is not None else ReadStats()
    began = time.monotonic()
    consumer = kafka_clients.consumer(bootstrap, timeout_s)
    try:
        tps = _partitions(consumer, bootstrap, topics, optional)
        for t in dict.fromkeys([*topics, *optional]):
            stats.fetched.setdefault(t, 0)
        if not tps:
            return
        consumer.assign(tps)
        try:
            ranges = _ranges(consumer, tps, period, stats, last, _retention_of(bootstrap))
        except KafkaError as exc:
            raise BrokerUnavailable(f"the broker at {bootstrap} did not answer: {exc}") from None
        remaining = {tp for tp, r in ranges.items() if r.stop > r.start}
        for tp in tps:
            if tp in remaining:
                consumer.seek(tp, ranges[tp].start)
        if set(tps) - remaining:
            consumer.pause(*(set(tps) - remaining))
        total = sum(ranges[tp].stop - ranges[tp].start for tp in remaining)
        # Not sought by time: a broker may index append times, not the records' own.
        beyond = _ms(period.end + END_SLACK) if period.end is not None else None
        last_moved = time.monotonic()
        while remaining:
            try:
                batch = consumer.poll(timeout_ms=500, max_records=10_000)
            except KafkaError as exc:
                raise BrokerUnavailable(f"reading from {bootstrap} failed: {exc}") from None
            past: set[TopicPartition] = set()
            for tp, records in batch.items():
                stop = ranges[tp].stop
                stats.fetched[tp.topic] += len(records)
                for r in records:
                    if r.offset >= stop:
                        break
                    if beyond is not None and r.timestamp >= beyond:
                        past.add(tp)  # its records have passed the period's end
                        break
                    if period.contains_ms(r.timestamp):
                        yield _record(r)
            done = past | {tp for tp in remaining if consumer.position(tp) >= ranges[tp].stop}
            done &= remaining
            if done:
                consumer.pause(*done)
                remaining -= done
            if batch or done:
                last_moved = time.monotonic()
            elif time.monotonic() - last_moved > timeout_s:
                names = ", ".join(sorted({tp.topic for tp in remaining}))
                raise BrokerUnavailable(
                    f"reading {names} from {bootstrap}: no record for {timeout_s:.0f} s "
                    f"(--timeout), {stats.total:,} of {total:,} read"
                )
            if progress is not None and total:
                share = 100 * stats.total // total
                progress(f"{stats.total:,} of {total:,} records read ({share} %)")
    finally:
        stats.seconds = time.monotonic() - began
        consumer.close()


def read_topics(
    bootstrap: Bootstrap,
    topics: Iterable[str],
    *,
    optional: Iterable[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, list[Record]]:
    """Every record now in each topic, in (partition, offset) order per topic: for the
    small compacted topics only (registers, tenant control, the audit trail).

    A missing topic raises TopicMissing, except those in `optional`, which read as empty
    (the audit topic before the first replay, for instance)."""
    wanted = list(dict.fromkeys([*topics, *optional]))
    out: dict[str, list[Record]] = {t: [] for t in wanted}
    for r in scan(bootstrap, topics, optional=optional, timeout_s=timeout_s):
        out[r.topic].append(r)
    for records in out.values():
        records.sort(key=lambda r: (r.partition, r.offset))
    return out


def read_at(
    bootstrap: Bootstrap,
    topic: str,
    positions: Iterable[tuple[int, int]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[tuple[int, int], Record]:
    """The records at these (partition, offset) positions, each fetched where it is
    (seek, not a read from the start); a position that holds none is left out."""
    wanted = sorted(set(positions))
    found: dict[tuple[int, int], Record] = {}
    consumer = kafka_clients.consumer(bootstrap, timeout_s)
    try:
        tps = {tp.partition: tp for tp in _partitions(consumer, bootstrap, [topic], [])}
        usable = [(p, o) for p, o in wanted if p in tps]
        if not usable:
            return found
        consumer.assign([tps[p] for p in sorted({p for p, _ in usable})])
        try:
            firsts = consumer.beginning_offsets(list(consumer.assignment()))
            ends = consumer.end_offsets(list(consumer.assignment()))
        except KafkaError as exc:
            raise BrokerUnavailable(f"the broker at {bootstrap} did not answer: {exc}") from None
        for p, o in usable:
            tp = tps[p]
            if not firsts[tp] <= o < ends[tp]:
                continue
            consumer.pause(*[x for x in consumer.assignment() if x != tp])
            consumer.resume(tp)
            consumer.seek(tp, o)
            deadline = time.monotonic() + timeout_s
            while consumer.position(tp) <= o:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"reading {topic} {p}@{o} from {bootstrap} took longer than "
                        f"{timeout_s:.0f} s (--timeout)"
                    )
                for r in consumer.poll(timeout_ms=500, max_records=1).get(tp, []):
                    if r.offset == o:
                        found[(p, o)] = _record(r)
                    if r.offset >= o:
                        break
                if (p, o) in found:
                    break
        return found
    finally:
        consumer.close()


def send(
    bootstrap: Bootstrap,
    records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> list[str]:
    """Send (topic, key, value, headers) records, each acknowledged by the broker before
    the next; returns where each went as topic/partition@offset."""
    producer = kafka_clients.producer(bootstrap)
    where: list[str] = []
    try:
        for topic, key, value, headers in records:
            meta = producer.send(topic, key=key, value=value, headers=headers).get(30)
            where.append(f"{meta.topic}/{meta.partition}@{meta.offset}")
        producer.flush()
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"the broker at {bootstrap} did not take record {len(where) + 1} of "
            f"{len(records)}: {exc}",
            sent=where,
        ) from None
    finally:
        producer.close()
    return where
