"""The per-packet pipeline without sockets: drops, Status-Server, and hostile input."""
import random

from pyrad.packet import AccountingResponse, AcctPacket, StatusServer

from radiusd.config import Settings
from radiusd.core.snapshot import NasInfo, build_snapshot
from radiusd.radius.nas_table import NasTable
from radiusd.radius.server import AUTH, ACCT, EdgeState, RadiusServer
from radius_packets import DICTIONARY, SECRET, acct_request, auth_request


class Transport:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append((data, addr))

    def is_closing(self):
        return False


class Listener:
    def __init__(self, kind):
        self.kind = kind
        self.transport = Transport()


def make_server(**nas_options):
    nas = [NasInfo(1, "gw", "127.0.0.1/32", SECRET, **nas_options), NasInfo(2, "off", "127.0.0.9/32", SECRET, active=False)]
    server = RadiusServer(Settings(), sessions=None)
    snapshot = build_snapshot(version=1, nas=nas)
    server.state = EdgeState(snapshot, NasTable.from_snapshot(snapshot))
    return server


def dropped(server, kind, reason):
    return server.metrics.get("radiusd_packets_dropped_total", port=kind, reason=reason)


def test_unknown_and_inactive_nas_dropped():
    server, listener = make_server(), Listener(AUTH)
    data, _ = auth_request([("User-Name", "x")])
    server.handle_datagram(listener, data, ("127.0.0.3", 5000))
    server.handle_datagram(listener, data, ("127.0.0.9", 5000))
    assert listener.transport.sent == []
    assert dropped(server, AUTH, "unknown_nas") == 1 and dropped(server, AUTH, "inactive_nas") == 1


def test_status_server_from_ipv4_mapped_source_and_replayed_from_cache():
    server, listener = make_server(), Listener(ACCT)
    pkt = AcctPacket(code=StatusServer, secret=SECRET, dict=DICTIONARY)
    data = pkt.RequestPacket()
    server.handle_datagram(listener, data, ("::ffff:127.0.0.1", 5000, 0, 0))
    server.handle_datagram(listener, data, ("::ffff:127.0.0.1", 5000, 0, 0))
    (first, _), (second, _) = listener.transport.sent
    assert first == second and first[0] == AccountingResponse
    assert server.metrics.get("radiusd_status_server_total", port=ACCT) == 1
    assert server.metrics.get("radiusd_duplicates_total", port=ACCT, kind="replayed") == 1


def test_proxy_state_without_ma_dropped_even_when_ma_not_required():
    server, listener = make_server(message_authenticator="no"), Listener(AUTH)
    data, _ = auth_request([("User-Name", "x"), ("Proxy-State", b"forged")], ma=False)
    server.handle_datagram(listener, data, ("127.0.0.1", 5000))
    assert dropped(server, AUTH, "proxy_state_without_message_authenticator") == 1


def test_wrong_packet_codes_for_the_port_are_dropped():
    server = make_server()
    data, _ = acct_request([("Acct-Status-Type", 1), ("Acct-Session-Id", "x")])
    server.handle_datagram(Listener(AUTH), data, ("127.0.0.1", 5000))
    auth, _ = auth_request([("User-Name", "x")])
    server.handle_datagram(Listener(ACCT), auth, ("127.0.0.1", 5000))
    assert dropped(server, AUTH, "unsupported_code") == 1 and dropped(server, ACCT, "unsupported_code") == 1


def test_mutated_packets_never_raise_and_never_get_an_answer():
    # a NAS that has shown it sends Message-Authenticator (policy auto, learned): a mutated
    # request without a valid one is a forgery
    server = make_server(message_authenticator_learned=True)
    rng = random.Random(3596)
    auth, _ = auth_request([("User-Name", "acme-sip"), ("Called-Station-Id", "4420"), ("h323-conf-id", "h323-conf-id=1 2 3 4")],
                           password="pw")
    acct, _ = acct_request([("Acct-Status-Type", 2), ("Acct-Session-Id", "s"), ("h323-setup-time", "10:00:00.000 GMT Mon Jan 5 2026")])
    for base, kind in ((auth, AUTH), (acct, ACCT)):
        listener = Listener(kind)
        for _ in range(400):
            data = bytearray(base)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.3:
                data = data[: rng.randrange(len(data))]
            if bytes(data) == base:
                continue
            server.handle_datagram(listener, bytes(data), ("127.0.0.1", rng.randrange(1024, 65535)))
        assert listener.transport.sent == []
    assert server.metrics.get("radiusd_packets_dropped_total", port=AUTH, reason="internal_error") == 0
    assert server.metrics.get("radiusd_packets_dropped_total", port=ACCT, reason="internal_error") == 0


def test_drop_log_lines_are_rate_limited_but_counters_count_everything():
    from radiusd.radius.server import LogLimiter

    now = [0.0]
    limiter = LogLimiter(interval=1.0, clock=lambda: now[0])
    assert limiter.allow(("auth", "unknown_nas", "10.0.0.1")) == 0
    assert [limiter.allow(("auth", "unknown_nas", "10.0.0.1")) for _ in range(50)] == [None] * 50
    assert limiter.allow(("auth", "unknown_nas", "10.0.0.2")) == 0      # another source is logged
    now[0] = 1.5
    assert limiter.allow(("auth", "unknown_nas", "10.0.0.1")) == 50     # next line says what was skipped
    server, listener = make_server(), Listener(AUTH)
    data, _ = auth_request([("User-Name", "x")])
    for _ in range(30):
        server.handle_datagram(listener, data, ("127.0.0.3", 5000))
    assert dropped(server, AUTH, "unknown_nas") == 30


class GroupWriter:
    """Stands in for the accounting writer: keeps the records and acknowledges a whole group at
    once from its own thread, as the real writer does after a commit."""

    def __init__(self):
        self.pending = []

    def submit(self, facts, on_done):
        self.pending.append((facts, on_done))

    def commit(self, results):
        import threading

        group, self.pending = self.pending, []
        thread = threading.Thread(target=lambda: [on_done(ok) for (_, on_done), ok in zip(group, results)])
        thread.start()
        thread.join()


class CountingLoop:
    """The real event loop, counting the wake-ups the writer thread asks for."""

    def __init__(self, loop):
        self.loop, self.wakeups = loop, 0

    def call_soon_threadsafe(self, *args):
        self.wakeups += 1
        return self.loop.call_soon_threadsafe(*args)


async def until(condition, timeout=5.0):
    """Let the event loop run until `condition()` holds (the writer's callbacks are queued)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0)


def test_a_committed_group_is_answered_with_one_wakeup_and_failures_get_no_answer():
    import asyncio

    async def scenario():
        server, listener = make_server(message_authenticator="no"), Listener(ACCT)
        server.writer = GroupWriter()
        server.loop = CountingLoop(asyncio.get_running_loop())
        requests = [acct_request([("Acct-Status-Type", status), ("Acct-Session-Id", f"leg-{i}")], id=i)[0]
                    for i, status in enumerate((1, 1, 2, 2))]
        for i, data in enumerate(requests):
            server.handle_datagram(listener, data, ("127.0.0.1", 6000 + i))
        assert listener.transport.sent == []          # nothing is answered before it is stored
        server.writer.commit([True, True, True, False])
        await until(lambda: len(listener.transport.sent) == 3 and dropped(server, ACCT, "not_recorded") == 1)
        assert server.loop.wakeups == 1
        answered = sorted(addr[1] for _, addr in listener.transport.sent)
        assert answered == [6000, 6001, 6002]        # the record stored nowhere gets no answer
        assert all(data[0] == AccountingResponse for data, _ in listener.transport.sent)
        assert server.metrics.get("radiusd_accounting_total", status="start") == 2
        assert server.metrics.get("radiusd_accounting_total", status="stop") == 1
        assert dropped(server, ACCT, "not_recorded") == 1
        # the unrecorded one is a new request when the switch retransmits it
        server.handle_datagram(listener, requests[3], ("127.0.0.1", 6003))
        assert len(server.writer.pending) == 1
        server.writer.commit([True])
        await until(lambda: len(listener.transport.sent) == 4)
        assert server.loop.wakeups == 2 and len(listener.transport.sent) == 4

    asyncio.run(scenario())
