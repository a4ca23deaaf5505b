"""R2: the only URLs a token is ever sent to."""

from __future__ import annotations

import re
from dataclasses import dataclass

PRODUCTION_URLS = frozenset({"https://www.xledger.net/graphql", "https://xledger.net/graphql"})
DEMO_URL = "https://demo.xledger.net/graphql"
_SANDBOX_URL = re.compile(
    r"^http://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]):\d{1,5}/graphql$"
)


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which non-production URLs this worker may use (R2, decided).

    The demo host only for a tenant marked as a test tenant; a loopback sandbox only
    when the worker runs in an explicit sandbox mode.
    """

    allow_sandbox: bool = False


def url_allowed(url: str, *, test_tenant: bool, policy: UrlPolicy) -> bool:
    if url in PRODUCTION_URLS:
        return True
    if url == DEMO_URL:
        return test_tenant
    return policy.allow_sandbox and bool(_SANDBOX_URL.match(url))
