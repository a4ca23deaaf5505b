"""`worker preflight`: a tenant's settings and registers checked against its own Xledger
entity before its first payment, as a checklist in the order of the onboarding guide
(../shared/seed/): Oppsett Xledger, Oppsett Flyt, Økonomiinnstillinger, then a summary.

Each line is ✓ (passed), ✗ (would be refused or rejected: the line says what to do), –
(not checked because of a ✗ above, which it names) or ? (could not check: it says why).
The texts are Norwegian: the people who fix them are the municipality's finance staff and
Flyt administrators, as for rejections (`core/messages.py`).

`gather` does the I/O: the tenant's token (R5: from the secret store, never shown), its
entity's setup read from Xledger (`xledger/entity_setup.py`: read only, paced like the
worker, sent only where R2 allows). `judge` is pure: the checklist from what was gathered.
The registers are judged by the worker's own rules (`check_snapshot`, as publish-registers
and the register cache do) and the recent payments by the core's own `evaluate`.

- `report`    — sections, a check's line, the tenant's report, the exit code;
- `gather`    — the token's place and the entity's setup, read from Xledger;
- `checklist` — `preflight` and `judge`: Oppsett Xledger and Oppsett Flyt;
- `registers` — Økonomiinnstillinger and the recent payments.
"""

from worker.ops.preflight.checklist import judge, preflight
from worker.ops.preflight.gather import Environment, Gathered, gather
from worker.ops.preflight.register_checks import xledger_would_refuse
from worker.ops.preflight.report import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNCHECKED,
    FLYT,
    OKONOMI,
    SECTIONS,
    SUMMARY,
    XLEDGER,
    Check,
    RecentOutcomes,
    Status,
    TenantReport,
    exit_code,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNCHECKED",
    "FLYT",
    "OKONOMI",
    "SECTIONS",
    "SUMMARY",
    "XLEDGER",
    "Check",
    "Environment",
    "Gathered",
    "RecentOutcomes",
    "Status",
    "TenantReport",
    "exit_code",
    "gather",
    "judge",
    "preflight",
    "xledger_would_refuse",
]
