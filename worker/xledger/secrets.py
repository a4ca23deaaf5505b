"""R5: Xledger tokens, resolved from a reference; never logged, emitted or stored.

A token is read from the environment variable `XLEDGER_TOKEN_<REF>` (REF = token_ref
upper-cased, non-alphanumerics as `_`) or from the file `$XLEDGER_TOKEN_DIR/<token_ref>`.
A file that is there but cannot be read (a secret mounted for another user) is its own
error, naming the file, its mode and owner: the fix is the mount, not a new token.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from worker import logs


class Token:
    """A secret whose str/repr never show it: only `reveal()` does, at the HTTP header."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def digest(self) -> str:
        """A stand-in that tells tokens apart (a gate's key, "has it changed?") without
        holding the token itself."""
        return hashlib.sha256(self._value.encode()).hexdigest()

    def __repr__(self) -> str:
        return "Token(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class MissingToken(LookupError):
    """No token for a reference. The message names the reference, never a value."""


class UnreadableToken(MissingToken):
    """The token's file is there and this process cannot read it (its mode, its owner, or
    not a file). A MissingToken to the callers (the tenant waits, as for a missing one);
    the message names the file, its mode and owner, and the process's user."""


def env_name(token_ref: str) -> str:
    return "XLEDGER_TOKEN_" + re.sub(r"[^A-Za-z0-9]", "_", token_ref).upper()


_SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class SecretStore:
    def __init__(self, environ: Mapping[str, str] | None = None, token_dir: Path | None = None):
        self._environ = os.environ if environ is None else environ
        directory = token_dir or self._environ.get("XLEDGER_TOKEN_DIR")
        self._dir = Path(directory) if directory else None

    def token(self, token_ref: str) -> Token:
        """The token for `token_ref`, stripped of surrounding whitespace (a trailing newline
        in a secret file or a variable would otherwise be sent, and escape masking); it is
        registered for masking (`worker.logs.mask`) the moment it is read."""
        value = (self._environ.get(env_name(token_ref)) or "").strip()
        if not value and self._dir is not None and _SAFE_REF.match(token_ref):
            # The reference names a file inside the directory only: no path tricks.
            path = self._dir / token_ref
            try:
                value = path.read_text("utf-8").strip()
            except FileNotFoundError:
                value = ""
            except (OSError, UnicodeDecodeError) as exc:
                raise UnreadableToken(_unreadable(token_ref, path, exc)) from None
        if not value:
            where = f"${env_name(token_ref)}"
            if self._dir is not None:
                where += f" or {self._dir}/{token_ref}"
            raise MissingToken(f"no Xledger token for token_ref {token_ref!r} (looked in {where})")
        logs.register_secret(value)
        return Token(value)


def _unreadable(token_ref: str, path: Path, exc: Exception) -> str:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    try:
        info = path.stat()
        kind = "" if stat.S_ISREG(info.st_mode) else ", not a regular file"
        has = f"mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid} gid {info.st_gid}"
    except OSError:
        kind, has = "", "mode unknown"
    return (
        f"the Xledger token file for token_ref {token_ref!r}, {path}, cannot be read by this "
        f"process (uid {os.getuid()}, gid {os.getgid()}, groups "
        f"{sorted(os.getgroups())}): {why}; the file has {has}{kind}. Mount the secret so "
        "this user can read it (Kubernetes: securityContext.fsGroup and the volume's "
        "defaultMode), rather than making a new token"
    )
