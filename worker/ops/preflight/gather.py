"""What the preflight gathers about a tenant: where its token is (R5: never what it is) and
its entity's setup, read from Xledger (`xledger/entity_setup.py`: read only, paced like
the worker, sent only where R2 allows). The checks are made from it (`checklist.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from worker.config import Settings
from worker.contracts import PaymentStatusEvent, RegisterSnapshot
from worker.contracts.submission import GL_OBJECT_FIELDS
from worker.core.endpoints import UrlPolicy, url_allowed
from worker.xledger.client import Target
from worker.xledger.entity_setup import EntitySetup, SetupReader, SetupUnreadable
from worker.xledger.errors import AuthFailed
from worker.xledger.secrets import MissingToken, SecretStore, env_name


@dataclass(frozen=True)
class Environment:
    """Where tokens are and where requests go: the worker's own settings (R2, R5), as
    `runtime.make_client` uses them."""

    environ: Mapping[str, str]
    token_dir: Path | None = None
    sandbox: bool = False  # FLYT_SANDBOX=1: a loopback sandbox may stand in for Xledger
    endpoint_override: str | None = None  # FLYT_XLEDGER_ENDPOINT, sandbox mode only

    @classmethod
    def of(cls, s: Settings, environ: Mapping[str, str]) -> Environment:
        return cls(environ, s.token_dir, s.sandbox, s.xledger_endpoint_override)

    @property
    def policy(self) -> UrlPolicy:
        return UrlPolicy(allow_sandbox=self.sandbox)

    def check(self) -> None:
        """Refuse an endpoint override the worker's client would refuse (R2)."""
        override = self.endpoint_override
        if override is not None and not url_allowed(
            override, test_tenant=False, policy=self.policy
        ):
            raise ValueError(
                f"FLYT_XLEDGER_ENDPOINT={override} is allowed only for a loopback sandbox "
                "URL (http://127.0.0.1:PORT/graphql) with FLYT_SANDBOX=1 (R2)"
            )

    def secrets(self) -> SecretStore:
        return SecretStore(self.environ, token_dir=self.token_dir)

    def token_place(self, token_ref: str) -> str:
        """Where a token that was found came from (never the token)."""
        name = env_name(token_ref)
        if (self.environ.get(name) or "").strip():
            return f"${name}"
        directory = self.token_dir or self.environ.get("XLEDGER_TOKEN_DIR")
        return f"{directory}/{token_ref}"

    def token_places(self, token_ref: str) -> str:
        """Where the secret store looks for a token (as `SecretStore.token` does)."""
        directory = self.token_dir or self.environ.get("XLEDGER_TOKEN_DIR")
        places = f"${env_name(token_ref)}"
        return places + (f" og {directory}/{token_ref}" if directory else "")

    def reader(self, **settings: Any) -> SetupReader:
        return SetupReader(
            self.secrets(),
            policy=self.policy,
            endpoint_override=self.endpoint_override,
            **settings,
        )


@dataclass
class Gathered:
    """Everything `judge` needs about one tenant."""

    snapshot: RegisterSnapshot
    source: str  # where the snapshot came from, for the heading
    policy: UrlPolicy
    sent_to: str | None = None  # where the requests went, when not the snapshot's URL
    token_place: str | None = None
    token_missing: str | None = None  # where it was looked for
    token_refused: str | None = None
    unreadable: str | None = None  # why Xledger could not be read
    setup: EntitySetup | None = None
    # R13 is judged against the snapshot in force, which only the registers topic knows.
    judge_roles: bool = False
    is_in_force: bool = False  # the snapshot is the one in force: the worker accepted it
    in_force: RegisterSnapshot | None = None
    recent: list[PaymentStatusEvent] | None = None  # newest first; None: not read
    recent_note: str = "ingen broker: --bootstrap eller FLYT_BOOTSTRAP_SERVERS"
    today: date = field(default_factory=date.today)


def gl_fields(snapshot: RegisterSnapshot) -> list[str]:
    return [d.xledger_field for d in snapshot.dimensions if d.xledger_field in GL_OBJECT_FIELDS]


async def gather(
    snapshot: RegisterSnapshot,
    env: Environment,
    reader: SetupReader,
    *,
    source: str,
    judge_roles: bool = False,
    in_force: RegisterSnapshot | None = None,
    recent: list[PaymentStatusEvent] | None = None,
    recent_note: str | None = None,
    today: date | None = None,
) -> Gathered:
    s = snapshot.settings
    g = Gathered(snapshot, source, env.policy, judge_roles=judge_roles, in_force=in_force)
    g.recent = recent
    if recent_note is not None:
        g.recent_note = recent_note
    if today is not None:
        g.today = today
    target = Target(snapshot.tenant_id, s.url, s.token_ref, snapshot.test_tenant)
    if reader.endpoint_override and reader.endpoint_override != s.url:
        g.sent_to = reader.endpoint_override
    try:
        env.secrets().token(s.token_ref)
        g.token_place = env.token_place(s.token_ref)
    except MissingToken:
        g.token_missing = env.token_places(s.token_ref)
        return g
    if not url_allowed(s.url, test_tenant=snapshot.test_tenant, policy=env.policy):
        return g  # nothing is sent: `judge` says why
    projects = any(d.xledger_field == "project" for d in snapshot.dimensions)
    try:
        g.setup = await reader.read(target, gl_fields(snapshot), projects=projects)
    except AuthFailed as exc:
        g.token_refused = str(exc)
    except SetupUnreadable as exc:
        g.unreadable = str(exc)
    return g
