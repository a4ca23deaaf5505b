"""Issue 26 N8 on the real brokers: the group consumer never resets a position by itself.
Records deleted (here by DeleteRecords, as retention would) while their partition was
paused are said with their offsets (`input_offsets_lost`, flyt_input_offsets_lost_total),
and reading goes on from the first offset the broker still has; with aiokafka's
`auto_offset_reset="earliest"` (15664b2) the consumer reset it in silence."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition as AioTP
from prometheus_client import REGISTRY

from tests.brokers import Broker
from tests.waiting import until
from worker.engine.backend import GroupSettings
from worker.engine.engine import Engine, EngineSettings, StageContext
from worker.engine.kafka import KafkaBackend, KafkaReader
from worker.engine.offsets import Lane
from worker.engine.producer import KafkaProducer
from worker.engine.records import Output, Record, TopicPartition
from worker.engine.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


class Copy:
    """Copies each record it is handed to `out`, in order."""

    name = "copy"

    def __init__(self, inp: str, out: str, ctx: StageContext) -> None:
        self.topics = (inp,)
        self.out = out
        self.ctx = ctx
        self.writes: set[asyncio.Task[set[int]]] = set()

    def submit(self, lane: Lane, records: list[Record]) -> None:
        outputs = [Output(self.out, r.key, r.value, source=r, partition=0) for r in records]
        task = asyncio.get_running_loop().create_task(
            self.ctx.write(outputs, (), [(lane, r) for r in records])
        )
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def assigned(self, lanes: list[Lane]) -> None:
        pass

    async def revoked(self, lanes: list[Lane], deadline: float) -> bool:
        return True

    async def handed_over(self, lanes: list[Lane], clean: bool) -> None:
        pass


def lost(topic: str) -> float:
    labels = {"topic": topic, "partition": "0"}
    return REGISTRY.get_sample_value("flyt_input_offsets_lost_total", labels) or 0.0


async def test_records_deleted_while_their_partition_is_paused_are_named_never_skipped_silently(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    run = secrets.token_hex(3)
    inp, out = f"n8-in-{run}", f"n8-out-{run}"
    s = broker.settings()
    rf = s.profile().replication_factor
    await ensure_topics(broker.bootstrap, [TopicSpec(t, 1, {}, rf) for t in (inp, out)])
    backend = KafkaBackend(
        broker.bootstrap, idempotent=s.profile().idempotent_producers, max_request_size=1 << 20
    )
    producer = KafkaProducer(
        broker.bootstrap, idempotent=s.profile().idempotent_producers, max_request_size=1 << 20
    )
    await producer.start()
    settings = EngineSettings(
        GroupSettings(
            f"n8-{run}",
            s.profile().session_timeout_s,
            s.profile().heartbeat_interval_s,
            s.profile().rebalance_timeout_s,
            copartitioned=((inp,),),
        ),
        commit_interval_s=0.1,
        hand_over_s=2.0,
    )
    engine = Engine(backend, settings, [lambda ctx: Copy(inp, out, ctx)])
    tp = TopicPartition(inp, 0)
    before = lost(inp)
    await engine.start()
    try:
        await producer.send_many([Output(inp, b"k", b"0", partition=0)])
        await until(
            lambda: engine.lanes.get(tp) is not None and engine.lanes[tp].committed == 1,
            30.0,
            0.05,
        )
        engine.consumer.pause({tp})
        await producer.send_many(
            [Output(inp, b"k", str(i).encode(), partition=0) for i in range(1, 8)]
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.delete_records({AioTP(inp, 0): RecordsToDelete(5)}, timeout_ms=10_000)
        except KafkaError as exc:  # an embedded broker without DeleteRecords
            pytest.skip(f"{broker.kind} cannot delete records: {exc!r}")
        finally:
            await admin.close()
        engine.consumer.resume({tp})
        await until(lambda: engine.lanes[tp].committed == 8, 30.0, 0.05)
    finally:
        await engine.stop(5.0)
        await producer.stop()
    values = await _read(broker, out, 4)
    assert values == [b"0", b"5", b"6", b"7"]
    assert lost(inp) - before == 4
    printed = capsys.readouterr()
    assert "input_offsets_lost" in printed.out + printed.err


async def _read(broker: Broker, topic: str, n: int) -> list[bytes]:
    reader = KafkaReader(broker.bootstrap)
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        reader.seek(tp, 0)
        got: list[bytes] = []
        for _ in range(100):
            for records in (await reader.poll(0.3)).values():
                got += [r.value or b"" for r in records]
            if len(got) >= n:
                break
        return got
    finally:
        await reader.stop()
