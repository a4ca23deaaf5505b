"""Reading a secret file (a password, a key, a client properties file): missing,
unreadable and empty are errors that name the file (and for an unreadable one its mode
and owner, and this process's), never what it holds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from worker.kafka_clients.errors import KafkaSettingsError


def read_secret(path: Path, setting: str) -> str:
    """A secret file's content, stripped. Missing, unreadable and empty are three errors,
    each naming the file (and for an unreadable one its mode and owner), never the content."""
    readable(path, setting)
    try:
        value = path.read_text("utf-8").strip()
    except UnicodeDecodeError:
        raise KafkaSettingsError(f"{setting} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise KafkaSettingsError(_unreadable(path, setting, exc)) from None
    if not value:
        raise KafkaSettingsError(f"{setting} {path} is empty")
    return value


def readable(path: Path, setting: str) -> None:
    """Raises KafkaSettingsError unless `path` is a file this process can open."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KafkaSettingsError(f"{setting} {path} does not exist") from None
    except OSError as exc:
        raise KafkaSettingsError(_unreadable(path, setting, exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise KafkaSettingsError(f"{setting} {path} is not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise KafkaSettingsError(_unreadable(path, setting, exc)) from None


def _unreadable(path: Path, setting: str, exc: OSError) -> str:
    try:
        info = path.stat()
        owner = f"mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid} gid {info.st_gid}"
    except OSError:
        owner = "mode unknown"
    return (
        f"{setting} {path} cannot be read by this process (uid {os.getuid()}, gid "
        f"{os.getgid()}): {exc.strerror or type(exc).__name__}; the file has {owner}"
    )
