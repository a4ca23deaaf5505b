"""Which process sent a request: the owner of a loopback TCP socket, found by the client's
local port (Linux /proc). The chaos campaign and tests use it to tell which worker sent a
batch the Xledger sandbox stored."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def socket_inode(local_port: int) -> str | None:
    """The inode of the loopback TCP socket bound to this local port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == local_port:
                return cols[9]
    return None


def socket_owner(pids: Iterable[int], inode: str) -> int | None:
    """Which of these processes holds the socket."""
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


def sender_of(local_port: int | None, pids: Iterable[int]) -> int | None:
    """The process among `pids` whose socket has this local port, or None."""
    if local_port is None:
        return None
    inode = socket_inode(local_port)
    return socket_owner(pids, inode) if inode else None
