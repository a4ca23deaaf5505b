"""What an Xledger answer means for the client: done, wait, retry, or give up.

Xledger answers most errors as HTTP 200 with an `errors` array whose items carry a
top-level `code` (xledger.md). Messages are kept (finance staff need Xledger's words)
but no token is ever put in one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

BURST = "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
CONCURRENCY = "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"
CREDITS = "BAD_REQUEST.INSUFFICIENT_CREDITS"

# The waits Xledger's own sample uses, when the error gives no reset time.
DEFAULT_WAIT_S = {BURST: 5.0, CONCURRENCY: 1.0}


class XledgerError(Exception):
    """Base: `code` is a short label for metrics and DLQ headers."""

    code = "error"


class RateLimited(XledgerError):
    """Xledger did nothing; ask again after `wait_s`."""

    def __init__(self, code: str, wait_s: float, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.wait_s = wait_s


class CreditsExhausted(XledgerError):
    """The customer's request credits are used up: pause this tenant for a long while."""

    code = "INSUFFICIENT_CREDITS"

    def __init__(self, message: str, reset_in_s: float | None) -> None:
        super().__init__(message)
        self.reset_in_s = reset_in_s


class TransientError(XledgerError):
    """Failed before Xledger could act (connection refused, nothing sent): safe to resend."""

    code = "transient"


class UnknownOutcome(XledgerError):
    """Sent, but no trustworthy answer (timeout, reset, 5xx): Xledger may have committed it,
    or may commit it still. For a mutation, the client sends nothing more of it until the
    settle time has passed, then looks it up (R14, decided 12-06)."""

    code = "unknown_outcome"


class AnswerUnclear(UnknownOutcome):
    """Xledger answered a mutation, but the answer does not say what it stored (lines
    missing from it): Xledger is done with the request, so a lookup now tells."""


class Refused(XledgerError):
    """Xledger refused the request's content (validation). Resending it will not help."""

    code = "refused"

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


class AuthFailed(XledgerError):
    """The token was refused or is malformed: no payment of this tenant can be posted."""

    code = "auth"


class LookupFailed(Exception):
    """Xledger could not be asked what it holds (retries spent, token refused or missing,
    URL not allowed): nothing is known. The message says why; it never holds a token."""


def _seconds_until(iso: Any, now: datetime) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_errors(errors: list[dict[str, Any]], now: datetime | None = None) -> XledgerError:
    """The one exception that best describes a GraphQL `errors` array."""
    now = now or datetime.now(UTC)
    messages = [str(e.get("message", "")) for e in errors] or ["unknown error"]
    for e in errors:
        code = str(e.get("code") or (e.get("extensions") or {}).get("code") or "")
        ext = e.get("extensions") or {}
        if code in DEFAULT_WAIT_S:
            wait = _seconds_until(ext.get("resetAt"), now)
            return RateLimited(
                code, wait if wait is not None else DEFAULT_WAIT_S[code], messages[0]
            )
        if code == CREDITS:
            return CreditsExhausted(
                str(e.get("message", "")), _seconds_until(ext.get("resetAt"), now)
            )
    lowered = " ".join(messages).lower()
    if "bad format for api token" in lowered or any(
        str(e.get("code", "")).upper() in {"UNAUTHORIZED", "BAD_REQUEST.BAD_TOKEN_FORMAT"}
        for e in errors
    ):
        return AuthFailed("Xledger refused the API token")
    if "timed out" in lowered:
        return UnknownOutcome(messages[0])
    return Refused(messages)
