"""The preflight's report: its sections in the onboarding guide's order, each check's line
(✓ ✗ – ?), what the tenant's recent payments would come to, and the exit code."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

XLEDGER = "Oppsett Xledger"
FLYT = "Oppsett Flyt"
OKONOMI = "Økonomiinnstillinger"
SUMMARY = "Oppsummering"
SECTIONS = (XLEDGER, FLYT, OKONOMI, SUMMARY)

EXIT_OK = 0
EXIT_UNCHECKED = 1
EXIT_FAILED = 4


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"  # would be refused or rejected: the line says what to do
    SKIPPED = "skipped"  # not checked because of a failure above, which it names
    UNCHECKED = "unchecked"  # could not check: it says why


MARKS = {Status.OK: "✓", Status.FAILED: "✗", Status.SKIPPED: "–", Status.UNCHECKED: "?"}


@dataclass
class Check:
    section: str
    key: str  # stable: url, token_found, token_accepted, motkonto, bankkonti_pkey, …
    status: Status
    text: str  # what was checked, and what was found
    todo: str | None = None  # for ✗ and ?: what to do
    xledger: bool = False  # a check against Xledger (publish-registers --preflight gates)
    codes: list[str] = field(default_factory=list)  # what Xledger lacks, e.g. "konto 10899"

    @property
    def mark(self) -> str:
        return MARKS[self.status]

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "key": self.key,
            "status": str(self.status),
            "mark": self.mark,
            "text": self.text,
            "todo": self.todo,
            "xledger": self.xledger,
            "codes": self.codes,
        }


@dataclass
class RecentOutcomes:
    """What the tenant's last Betalt payments would come to with these registers."""

    evaluated: int = 0
    would_post: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # problem code → payments
    refused: Counter[str] = field(default_factory=Counter)  # what Xledger lacks → payments
    refused_payments: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "evaluated": self.evaluated,
            "would_post": self.would_post,
            "rejected_by_worker": sum(self.rejected.values()),
            "rejected_by_code": dict(self.rejected),
            "refused_by_xledger": self.refused_payments,
            "refused_codes": dict(self.refused),
        }


@dataclass
class TenantReport:
    tenant_id: str
    version: int
    source: str
    checks: list[Check]
    recent: RecentOutcomes | None = None
    requests: int = 0  # Xledger requests made

    def lines(self, *statuses: Status) -> list[Check]:
        return [c for c in self.checks if c.status in statuses]

    @property
    def exit_code(self) -> int:
        if self.lines(Status.FAILED):
            return EXIT_FAILED
        return EXIT_UNCHECKED if self.lines(Status.UNCHECKED) else EXIT_OK

    def worker_refusals(self) -> list[Check]:
        return [c for c in self.checks if c.key == "registers" and c.status is Status.FAILED]

    def xledger_problems(self) -> list[Check]:
        """The Xledger checks that failed or could not be made: what publish-registers
        --preflight refuses to publish over."""
        return [
            c for c in self.checks if c.xledger and c.status in (Status.FAILED, Status.UNCHECKED)
        ]

    def refused_codes(self) -> list[str]:
        return [code for c in self.lines(Status.FAILED) if c.xledger for code in c.codes]

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "version": self.version,
            "source": self.source,
            "exit": self.exit_code,
            "requests": self.requests,
            "checks": [c.to_json() for c in self.checks],
            "summary": {
                "worker_would_refuse": [c.text for c in self.worker_refusals()],
                "xledger_would_refuse": self.refused_codes(),
                "recent": None if self.recent is None else self.recent.to_json(),
            },
        }


def exit_code(reports: Iterable[TenantReport]) -> int:
    """4 when anything would be refused or rejected; else 1 when anything could not be
    checked; else 0."""
    codes = {r.exit_code for r in reports}
    return EXIT_FAILED if EXIT_FAILED in codes else max(codes, default=EXIT_OK)


def not_checked(section: str, key: str, what: str, why: str) -> Check:
    return Check(section, key, Status.SKIPPED, f"{what}: ikke sjekket ({why})", xledger=True)


def count_of(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def all_of(n: int, one: str, many: str) -> str:
    """`den ene verdien` or `alle 4 verdier`."""
    return f"den ene {one}" if n == 1 else f"alle {n} {many}"
