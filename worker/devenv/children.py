"""Child processes (brokers) that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable


def dies_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child is SIGKILLed when the thread that forked it dies (Linux
    PR_SET_PDEATHSIG), so a SIGKILLed parent leaves no broker behind."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls it
    prctl = libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec
