"""The pure core: rules over a register snapshot. No I/O, no Kafka, no HTTP, no clock.

Read in the order of domain.md:
- `snapshot_rules` — R1–R13: which snapshots are refused, and why;
- `register_index` — a valid snapshot, precomputed so one evaluation does no register scan;
- `measures`       — R9: dotted measure types, *active*, the governing (placement) measure;
- `enrichment`     — R6–R12, R15: one payment's accounting string, or every problem;
- `posting`        — R18: the balanced two-line voucher.
"""

from worker.core.enrichment import evaluate
from worker.core.outcome import Enriched, Rejected
from worker.core.register_index import RegisterIndex
from worker.core.snapshot_rules import SnapshotRefusal, UrlPolicy, check_snapshot

__all__ = [
    "Enriched",
    "RegisterIndex",
    "Rejected",
    "SnapshotRefusal",
    "UrlPolicy",
    "check_snapshot",
    "evaluate",
]
