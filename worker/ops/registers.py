"""Publishing register snapshots to `flyt.registers.v1` (kafka-python)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from pydantic import ValidationError

from worker.contracts import RegisterSnapshot
from worker.contracts.reading import describe
from worker.core.endpoints import UrlPolicy
from worker.core.snapshot_rules import check_snapshot


class SnapshotsInvalid(Exception):
    """Some snapshot would be refused; nothing was published. One line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load(path: Path, policy: UrlPolicy) -> list[dict[str, Any]]:
    """The file's snapshots, checked against R1–R12; raises SnapshotsInvalid if any fails."""
    try:
        raw = json.loads(path.read_bytes())
    except OSError as exc:
        raise SnapshotsInvalid([f"cannot read {path}: {exc.strerror or exc}"]) from None
    except ValueError as exc:
        raise SnapshotsInvalid([f"{path} is not JSON: {exc}"]) from None
    items = raw if isinstance(raw, list) else [raw]
    problems: list[str] = []
    for i, item in enumerate(items, start=1):
        try:
            snapshot = RegisterSnapshot.model_validate(item)
        except ValidationError as exc:
            problems.append(f"snapshot #{i}: {describe(exc)}")
            continue
        for r in check_snapshot(snapshot, None, policy, check_roles=False):
            problems.append(
                f"{snapshot.tenant_id} v{snapshot.version}: [{r.rule} {r.code}] {r.message}"
            )
    if problems:
        raise SnapshotsInvalid(problems)
    return items


def publish(bootstrap: str, topic: str, snapshots: list[dict[str, Any]]) -> int:
    """Keyed by tenant (the topic is compacted); one record per send, each acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        for snap in snapshots:
            value = json.dumps(snap, ensure_ascii=False).encode()
            producer.send(topic, key=snap["tenant_id"].encode(), value=value).get(30)
        producer.flush()
    finally:
        producer.close()
    return len(snapshots)
