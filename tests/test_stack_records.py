"""helpers.local.records.port_owner_after_exit: a port whose holder cannot be named (a killed server whose last
thread is still exiting) is waited for briefly; a named owner, or one that never lets go, is reported."""

from __future__ import annotations

import os
import socket
import threading
import time

from helpers.local import records


def listening_socket() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_an_unseen_holder_that_lets_go_is_waited_for(monkeypatch) -> None:
    sock, port = listening_socket()
    real = records.port_owner
    monkeypatch.setattr(records, "port_owner",  # as for a dying process: bound, but no pid to name
                        lambda p, h="127.0.0.1": records.UNSEEN_OWNER if real(p, h) else None)
    threading.Timer(0.5, sock.close).start()
    started = time.monotonic()
    assert records.port_owner_after_exit(port, grace=5) is None
    assert 0.4 < time.monotonic() - started < 4


def test_an_unseen_holder_that_stays_is_reported_after_the_grace(monkeypatch) -> None:
    sock, port = listening_socket()
    monkeypatch.setattr(records, "port_owner", lambda p, h="127.0.0.1": records.UNSEEN_OWNER)
    try:
        assert records.port_owner_after_exit(port, grace=0.3) == records.UNSEEN_OWNER
    finally:
        sock.close()


def test_a_named_owner_is_reported_at_once() -> None:
    sock, port = listening_socket()
    try:
        started = time.monotonic()
        owner = records.port_owner_after_exit(port, grace=5)
        assert owner is not None and f"pid {os.getpid()}" in owner  # this process: always visible to itself
        assert time.monotonic() - started < 1
    finally:
        sock.close()
