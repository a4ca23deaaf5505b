"""The codes Xledger refused lately, per tenant (issue 20: requests are money and budget).

A code Xledger refused (`taxRule.code: No value matching owner …, code '25'.`) is refused
again for the next payment that carries it, until someone adds it in Xledger or changes the
registers. Asking again costs three requests per batch (the refused mutation, the lookup
that must follow it, the mutation of the rest: `never_twice.py`) and a share of the tenant's 18
per 5 s. So for a while (`keep_s`) a payment's *first* submission that carries a remembered
code is refused without a request, with Xledger's own message (R14: a rejection
`XLEDGER_REFUSED`, re-evaluated on a newer snapshot, R16).

Only first submissions: a resend (R13), a replay or a re-evaluation (R16) is always asked
of Xledger, so a fix made in Xledger is seen by the first payment sent again after it; and
a code Xledger then accepts is forgotten at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from worker.contracts import SubmissionFields
from worker.xledger.wire import RefusedCode, refused_code


class RefusalMemory:
    def __init__(self, keep_s: float, clock: Callable[[], float]) -> None:
        self.keep_s = keep_s
        self.clock = clock
        # tenant → (field, code) → (Xledger's refusal, when it was said)
        self._codes: dict[str, dict[tuple[str, str], tuple[RefusedCode, float]]] = {}

    def note(self, tenant: str, messages: Iterable[str]) -> None:
        """Xledger refused these messages' codes just now."""
        if self.keep_s <= 0:
            return
        now = self.clock()
        for r in filter(None, map(refused_code, messages)):
            self._codes.setdefault(tenant, {})[r.field, r.value] = (r, now)

    def refused(self, tenant: str, subs: Sequence[SubmissionFields]) -> dict[str, str]:
        """Payment id → Xledger's message, for the payments that carry a code Xledger
        refused less than `keep_s` ago."""
        codes = self._codes.get(tenant)
        if not codes:
            return {}
        now = self.clock()
        for key in [k for k, (_, at) in codes.items() if now - at >= self.keep_s]:
            del codes[key]
        out: dict[str, str] = {}
        for sub in subs:
            messages = [
                r.message
                for line in sub.lines
                for (field, value), (r, _) in codes.items()
                if str(getattr(line, field, None)) == value
            ]
            if messages:
                out[sub.payment_id] = " ".join(dict.fromkeys(messages))
        return out

    def accepted(self, tenant: str, subs: Sequence[SubmissionFields]) -> None:
        """Xledger took these payments: any remembered code they carry is valid now."""
        codes = self._codes.get(tenant)
        if not codes:
            return
        for sub in subs:
            for line in sub.lines:
                for field, value in list(codes):
                    if str(getattr(line, field, None)) == value:
                        del codes[field, value]
