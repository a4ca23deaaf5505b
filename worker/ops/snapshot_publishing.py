"""Publishing register snapshots to `flyt.registers.v1` (kafka-python)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.core.endpoints import UrlPolicy
from worker.core.snapshot_record import refusal_text
from worker.core.snapshot_rules import check_snapshot
from worker.kafka_clients.sync_clients import BrokerError as KafkaError
from worker.offline import SnapshotFileError, read_snapshot_file
from worker.ops import kafka_clients
from worker.ops.errors import BrokerUnavailable


class SnapshotsInvalid(Exception):
    """Some snapshot would be refused; nothing was published. One line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load(path: Path, policy: UrlPolicy) -> list[dict[str, Any]]:
    """The file's snapshots, checked against R1–R12; raises SnapshotsInvalid if any fails."""
    try:
        snapshots, problems = read_snapshot_file(path)
    except SnapshotFileError as exc:
        raise SnapshotsInvalid([str(exc)]) from None
    for _, snapshot in snapshots:
        for r in check_snapshot(snapshot, None, policy, check_roles=False):
            problems.append(f"{snapshot.tenant_id} v{snapshot.version}: {refusal_text(r)}")
    if problems:
        raise SnapshotsInvalid(problems)
    return [raw for raw, _ in snapshots]


def publish(bootstrap: kafka_clients.Bootstrap, topic: str, snapshots: list[dict[str, Any]]) -> int:
    """Keyed by tenant (the topic is compacted); one record per send, each acknowledged."""
    producer = kafka_clients.producer(bootstrap)
    try:
        for n, snap in enumerate(snapshots):
            value = json.dumps(snap, ensure_ascii=False).encode()
            try:
                producer.send(topic, key=snap["tenant_id"].encode(), value=value).get(30)
            except KafkaError as exc:
                raise BrokerUnavailable(
                    f"the broker at {bootstrap} did not take snapshot {n + 1} of "
                    f"{len(snapshots)} ({n} published): {exc}"
                ) from None
        producer.flush()
    finally:
        producer.close()
    return len(snapshots)
