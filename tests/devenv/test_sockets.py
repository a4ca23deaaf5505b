"""Which process holds a loopback connection (`worker/devenv/sockets.py`): how the chaos
campaign and the hand-over tests find the worker behind a batch the sandbox stored."""

from __future__ import annotations

import os
import socket

from worker.devenv.sockets import sender_of, socket_inode, socket_owner


def test_the_worker_behind_a_connection_is_found_by_its_socket() -> None:
    # How a kill lands between a post and its commit: the sandbox sees the client's port.
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        try:
            port = client.getsockname()[1]
            inode = socket_inode(port)
            assert inode is not None
            assert socket_owner([os.getpid()], inode) == os.getpid()
            assert socket_owner([os.getppid()], inode) is None
            assert sender_of(port, [os.getppid(), os.getpid()]) == os.getpid()
            assert sender_of(None, [os.getpid()]) is None
        finally:
            client.close()
