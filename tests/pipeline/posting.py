"""What the post stage's tests on the memory backend share: settings for one partition,
demo submissions, publishing them, a gate in front of the client, the engine with the post
stage alone, and reading back the ledger and the holder notes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tests.pipeline.memory import S, records, stage_engine
from worker.config import Settings
from worker.contracts import PaymentStatusEvent, Submission
from worker.contracts.headers import SOURCE
from worker.core import Enriched, evaluate
from worker.core.register_book import RegisterBook
from worker.demo.events import generate_events
from worker.devenv.sandbox import XledgerSandbox
from worker.engine.engine import Engine
from worker.engine.memory import MemoryBroker
from worker.engine.records import TopicPartition
from worker.pipeline.post_stage import PostStage
from worker.pipeline.posting_lease import HOLDER
from worker.pipeline.topics import POSTING, changelog_topic
from worker.runtime import make_client
from worker.xledger.client import PostResult, Target, XledgerClient

SLOW, FAST = "t-lillevik", "t-vestfold-bv"
ONE = replace(
    S,
    partitions=1,
    post_batch_window_s=0.05,
    xledger_request_deadline_s=1.0,
    xledger_settle_s=2.0,
    stop_grace_s=10.0,
)
T = ONE.topics
SUBS = TopicPartition(T.submissions, 0)


def submissions(b: RegisterBook, tenant: str, n: int, seed: int = 14) -> list[Submission]:
    out = []
    for raw in generate_events(3000, seed=seed):
        event = PaymentStatusEvent.model_validate(raw)
        if event.tenant_id != tenant or event.status != "Betalt":
            continue
        result = evaluate(event, b.index(tenant))
        if isinstance(result, Enriched) and event.payment_id not in {s.payment_id for s in out}:
            out.append(result.submission(event, datetime.now(UTC)))
        if len(out) == n:
            return out
    raise AssertionError("not enough demo submissions")


def publish(broker: MemoryBroker, subs: list[Submission], *headers: tuple[str, bytes]) -> None:
    for sub in subs:
        # Where its Betalt event sat: the refused payment goes back there (R14, R16).
        where = f"{T.payments}/0@0".encode()
        broker.append(
            T.submissions,
            sub.tenant_id.encode(),
            sub.model_dump_json().encode(),
            [(SOURCE, where), *headers],
            partition=0,
        )


class Gate:
    """The real client, with a gate in front of one tenant's calls: a call in hand for as
    long as the test wants (a slow Xledger, a stalled worker)."""

    def __init__(self, client: XledgerClient, tenant: str) -> None:
        self.client = client
        self.s = client.s
        self.tenant = tenant
        self.open = asyncio.Event()
        self.entered = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def post(
        self, target: Target, subs: Any, fence: Any = None, first: Any = ()
    ) -> PostResult:
        if target.tenant_id == self.tenant:
            self.entered.set()
            await self.open.wait()
        return await self.client.post(target, subs, fence, first)


def post_engine(
    broker: MemoryBroker, b: RegisterBook, client: Any, s: Any = ONE
) -> tuple[Engine, PostStage]:
    """The post stage alone on an engine (the enrich stage is not subscribed)."""
    return stage_engine(broker, s, lambda ctx: PostStage(s, b, client, ctx))


@asynccontextmanager
async def running(
    broker: MemoryBroker, b: RegisterBook, client: Any, s: Any = ONE
) -> AsyncIterator[tuple[Engine, PostStage]]:
    """The post stage started on its own engine; stopped, and its client closed, however
    the test ends."""
    engine, stage = post_engine(broker, b, client, s)
    await engine.start()
    try:
        yield engine, stage
    finally:
        await engine.stop(3.0)
        await getattr(client, "client", client).aclose()


def note(broker: MemoryBroker, value: dict[str, Any]) -> None:
    """The partition's holder note, as a last holder left it."""
    broker.append(
        changelog_topic(ONE, POSTING), HOLDER.encode(), json.dumps(value).encode(), partition=0
    )


def notes(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in records(broker, changelog_topic(ONE, POSTING))]


def client_for(box: XledgerSandbox, tokens: dict[str, str], s: Settings = ONE) -> XledgerClient:
    return make_client(replace(s, sandbox=True, xledger_endpoint_override=box.url), tokens)


def posted(box: XledgerSandbox) -> list[str]:
    """Payment ids in the ledger, one per line."""
    return [line["extIdentifier"].split(":")[2] for line in box.ledger()]


def twice_each(subs: list[Submission]) -> list[str]:
    """What the ledger holds when each payment is posted once: its two lines."""
    return sorted(s.payment_id for s in subs for _ in (1, 2))


def committed(broker: MemoryBroker, tp: TopicPartition = SUBS) -> int | None:
    return broker.group(ONE.app_id).committed.get(tp)
