"""Who may transfer payments by hand (R13): a named actor holding the Økonomi role."""

from __future__ import annotations

ROLE_OKONOMI = "Økonomi"


class Refused(Exception):
    """The operation is not allowed, or not possible for this record; the message says why."""


def require_okonomi(actor: str | None, roles: list[str]) -> None:
    """Replaying dead letters and resending rejections are manual transfers to Xledger."""
    if not actor or not actor.strip():
        raise Refused("a manual transfer must name its actor (--actor USER), R13")
    if ROLE_OKONOMI not in roles:
        held = ", ".join(roles) or "no role"
        raise Refused(
            f"{actor} holds {held}, but a manual transfer to Xledger needs the role "
            f"{ROLE_OKONOMI} (R13)"
        )


ROLE_OKONOMIINNSTILLINGER = "Økonomiinnstillinger"


def require_okonomiinnstillinger(actor: str | None, roles: list[str], what: str) -> None:
    """Pausing or resuming a tenant's posting changes how its payments are handled, as its
    registers do: R13 gives that to Økonomiinnstillinger."""
    if not actor or not actor.strip():
        raise Refused(f"{what} must name its actor (--actor USER), R13")
    if ROLE_OKONOMIINNSTILLINGER not in roles:
        held = ", ".join(roles) or "no role"
        raise Refused(
            f"{actor} holds {held}, but {what} needs the role {ROLE_OKONOMIINNSTILLINGER} (R13)"
        )
