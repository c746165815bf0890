"""A replaced worker's sockets on a handover: retired, the kernel gives every new datagram to the
successor's socket, while what was queued before stays readable and the replies still go out.
Real sockets on 127.0.0.1 and ::1 (radiusd.radius.server._Listener.retire)."""
from __future__ import annotations

import asyncio
import socket
import time
import types

import pytest

from radiusd.radius.server import _Listener, bind_udp


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(100))
        except BlockingIOError:
            return got


@pytest.fixture(autouse=True)
def loop():
    loop = asyncio.new_event_loop()   # close() takes the socket off the loop it is read in
    yield loop
    loop.close()


def _listener(sock: socket.socket, loop) -> _Listener:
    server = types.SimpleNamespace(loop=loop, log=types.SimpleNamespace(warning=lambda *a, **k: None))
    return _Listener(server, "auth", sock)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_a_retired_socket_gets_no_new_datagram_but_keeps_its_queue_and_replies(address, loop):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    old = bind_udp(address, 0, reuse_port=True)
    port = old.getsockname()[1]
    successor = bind_udp(address, port, reuse_port=True)
    switches = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(64)]   # 64 source ports
    try:
        for switch in switches:
            switch.sendto(b"before", (address, port))
        time.sleep(0.1)
        queued = _drain(successor)   # the old socket keeps its share unread
        listener = _listener(old, loop)
        listener.retire()
        for switch in switches:
            switch.sendto(b"after", (address, port))
        time.sleep(0.1)
        held = _drain(old)
        taken = _drain(successor)
        assert held and set(held) == {b"before"}                  # its queue is still read
        assert len(held) + len(queued) == 64
        assert taken == [b"after"] * 64                           # every new datagram went on
        listener.transport.sendto(b"reply", switches[0].getsockname()[:2])   # its answers still go out
        switches[0].settimeout(1)
        assert switches[0].recv(100) == b"reply"
        assert listener.close_if_empty() and listener.transport.is_closing()
    finally:
        for sock in [old, successor, *switches]:
            sock.close()


def test_a_socket_with_a_datagram_waiting_is_not_closed(loop):
    sock = bind_udp("127.0.0.1", 0, reuse_port=True)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listener = _listener(sock, loop)
        sender.sendto(b"x", sock.getsockname())
        time.sleep(0.05)
        assert not listener.close_if_empty() and not listener.transport.is_closing()
        assert _drain(sock) == [b"x"]
        assert listener.close_if_empty()
    finally:
        sender.close()
        sock.close()
