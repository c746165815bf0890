"""A flooding NAS for the fairness tests and figures: valid, signed Access-Requests from one
source address, as fast as a few Python processes can send them (or at a target rate).

    python3 tests/nas_flood.py --port 1812 --source 127.0.0.2 --seconds 5 --procs 2 [--rate 40000]

Each request is a real one of the demo's `loadtest-sip` login (accepted from any NAS; --login
another name for requests rejected without the store), with its
own Identifier/Request Authenticator per socket, so the server decodes and decides it (the
duplicate cache only replays a request seen with the same authenticator). Packets are built
once before sending: the flood costs the sender one sendto per datagram. Bounded in time.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from radiusd.bench.wire import LoadAccount, PacketFactory  # noqa: E402

SECRET = b"testing123"
VARIANTS = 8     # requests per (socket, Identifier): cycled, each with its own authenticator


def build(source: str, sockets: int, tag: int, login: str = "loadtest-sip") -> list[list[bytes]]:
    factory = PacketFactory(SECRET, nas_address=source, nas_identifier="flood")
    account = LoadAccount("login", login, "loadtest-pass", called="44")
    per_socket = []
    for s in range(sockets):
        packets = []
        for v in range(VARIANTS):
            for ident in range(256):
                seq = (tag * sockets + s) * VARIANTS * 256 + v * 256 + ident
                packets.append(factory.access_request(ident, account, seq, factory.conf_id(tag, seq))[0])
        per_socket.append(packets)
    return per_socket


def _send(port: int, source: str, host: str, seconds: float, rate: float, sockets: int, tag: int, login: str,
          out) -> None:
    packets = build(source, sockets, tag, login)
    socks = []
    for _ in range(sockets):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.setblocking(False)
        socks.append(sock)
    target = (host, port)
    sent = errors = 0
    start = time.monotonic()
    deadline = start + seconds
    index = 0
    chunk = 64
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if rate and sent >= (now - start) * rate:
            time.sleep(0.001)
            continue
        for sock, batch in zip(socks, packets):
            sendto = sock.sendto
            for i in range(index, index + chunk):
                try:
                    sendto(batch[i % len(batch)], target)
                    sent += 1
                except OSError:   # socket buffer full: the kernel is the bottleneck, keep going
                    errors += 1
        index += chunk
        # replies are not read: drain them so the kernel does not keep them queued
        for sock in socks:
            try:
                while True:
                    sock.recv(4096)
            except OSError:
                pass
    for sock in socks:
        sock.close()
    out.put((sent, errors, time.monotonic() - start))


class Flood:
    """Start `procs` sender processes in the background; `stop()` waits and returns the figures."""

    def __init__(self, port: int, source: str = "127.0.0.2", host: str = "127.0.0.1", seconds: float = 5.0,
                 procs: int = 2, sockets: int = 4, rate: float = 0.0, login: str = "loadtest-sip"):
        ctx = multiprocessing.get_context("fork")
        self.out = ctx.Queue()
        self.seconds = seconds
        per_proc_rate = rate / procs if rate else 0.0
        self.procs = [ctx.Process(target=_send, args=(port, source, host, seconds, per_proc_rate, sockets, tag, login, self.out),
                                  daemon=True) for tag in range(procs)]
        for proc in self.procs:
            proc.start()

    def stop(self, timeout: float = 60.0) -> dict:
        results = [self.out.get(timeout=timeout) for _ in self.procs]
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        sent = sum(r[0] for r in results)
        elapsed = max(r[2] for r in results)
        return {"sent": sent, "send_errors": sum(r[1] for r in results), "seconds": round(elapsed, 2),
                "per_second": round(sent / elapsed) if elapsed else 0}

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--source", default="127.0.0.2")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="target datagrams/s in all (0 = as fast as possible)")
    parser.add_argument("--login", default="loadtest-sip",
                        help="User-Name sent (loadtest-sip: accepted, each reserves in the store; "
                             "an unknown one: rejected without the store)")
    args = parser.parse_args()
    if not 0 < args.seconds <= 600:
        parser.error("--seconds: 0 to 600")
    flood = Flood(args.port, args.source, args.host, args.seconds, args.procs, args.sockets, args.rate, args.login)
    print(json.dumps(flood.stop(timeout=args.seconds + 60)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
