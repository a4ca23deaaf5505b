"""Outputs are written however long the broker takes: a failed write is retried, never dropped
(`worker/engine/delivery.py`)."""

from __future__ import annotations

from worker.engine.delivery import Delivery, DeliveryAbandoned
from worker.engine.records import Output, Record


class TooLarge(Exception):
    """A broker's refusal of a record over its max.message.bytes."""


class Producer:
    """Refuses the first `failures` writes (as a broker that is away would), then takes
    every record up to `limit` bytes; a larger one it refuses for ever, as a broker refuses
    one over its max.message.bytes."""

    unwritable = (TooLarge,)

    def __init__(self, failures: int = 0, limit: int = 1 << 20) -> None:
        self.failures, self.limit = failures, limit
        self.written: list[tuple[str, bytes | None]] = []

    async def send_many(self, outputs: list[Output]) -> list[BaseException | None]:
        errors: list[BaseException | None] = []
        for out in outputs:
            if self.failures > 0:
                self.failures -= 1
                errors.append(TimeoutError("broker away"))
            elif len(out.value or b"") > self.limit:
                errors.append(TooLarge())
            else:
                self.written.append((out.topic, out.value))
                errors.append(None)
        return errors


async def test_deliver_retries_failed_writes_until_all_are_written() -> None:
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    producer = Producer(failures=5)
    outputs = [Output("t", b"k", f"v{i}".encode()) for i in range(3)]
    await Delivery(producer, sleep=no_sleep).deliver(outputs)
    assert sorted(v for _, v in producer.written) == [b"v0", b"v1", b"v2"]
    assert sleeps == [0.5, 1.0]  # backoff between rounds; every output eventually written


def as_dead_letter(out: Output, exc: BaseException) -> Output:
    assert out.source is not None
    return Output(
        "dlq", out.key, b"dead:" + (out.source.value or b""), [("dlq.reason", b"unwritable")]
    )


def event(value: bytes) -> Record:
    return Record("payments", 0, 0, b"k", value)


async def test_an_output_the_broker_never_takes_dead_letters_its_input_and_the_batch_goes_on() -> (
    None
):
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    producer = Producer(limit=100)
    huge, small = event(b"event-huge"), event(b"event-small")
    outputs = [
        Output("submissions", b"t", b"x" * 500, source=huge),
        Output("submissions", b"t", b"fine", source=small),
    ]
    dead = await Delivery(producer, as_dead_letter, sleep=no_sleep).deliver(outputs)
    assert dead == {id(huge)}
    assert producer.written == [("submissions", b"fine"), ("dlq", b"dead:event-huge")]
    assert sleeps == []  # not retried: no retry can cure it


async def test_without_an_input_to_blame_an_oversized_record_is_retried_not_dropped() -> None:
    sleeps: list[float] = []
    producer = Producer(limit=100)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        producer.limit = 1000  # an operator raised the topic's limit

    deliver = Delivery(producer, as_dead_letter, sleep=sleep).deliver
    dead = await deliver([Output("dlq", b"k", b"x" * 500)])
    assert dead == set() and producer.written == [("dlq", b"x" * 500)] and sleeps == [0.5]


async def test_a_stopping_engine_gives_up_instead_of_retrying_for_ever() -> None:
    """A worker asked to stop while its broker is gone must end: the outputs' inputs stay
    undone, read again after a restart."""

    async def no_sleep(seconds: float) -> None:
        pass

    producer = Producer(failures=1000)
    delivery = Delivery(producer, stopping=lambda: True, sleep=no_sleep)
    try:
        await delivery.deliver([Output("t", b"k", b"v")])
    except DeliveryAbandoned as exc:
        assert "not written" in str(exc)
    else:
        raise AssertionError("a stopping delivery went on retrying")
    assert producer.written == []
