"""Run `python -m radiusd serve` in a subprocess on free ports, for the server tests."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from radiusd.admin.seeds import load_seed
from radiusd.config import PROJECT_ROOT
from radiusd.db import open_store

DEMO_SEED = PROJECT_ROOT / "schema" / "seeds" / "demo.sql"


def _below_ephemeral() -> range:
    """Ports the kernel never hands out by itself: below its ephemeral range. A port picked from
    that range (bind to 0) can be taken by the test's own next outgoing connection (PostgreSQL)
    before the server binds it: "Address already in use", seen once in a full run."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(10001, low))


def free_port(count: int = 1) -> list[int]:
    """Ports free for UDP on 127.0.0.1 and ::1 and for TCP on 127.0.0.1 (at this moment), below
    the kernel's ephemeral range."""
    ports = []
    candidates = _below_ephemeral()
    while len(ports) < count:
        port = random.choice(candidates)
        try:
            for family, kind, host in ((socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1"),
                                       (socket.AF_INET6, socket.SOCK_DGRAM, "::1"),
                                       (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1")):
                with socket.socket(family, kind) as s:
                    s.bind((host, port))
        except OSError:
            continue
        if port not in ports:
            ports.append(port)
    return ports


def seeded_store(url: str) -> None:
    engine, sessions = open_store(url)
    try:
        load_seed(sessions, DEMO_SEED, actor="test")
    finally:
        engine.dispose()


class ServerProcess:
    def __init__(self, url: str, tmp: Path, workers: int = 1, extra_args=(), name="srv", poll: float = 0.2,
                 ports: tuple[int, int] | None = None, metrics_port: int | None = None, toml: str = ""):
        self.url = url
        self.auth_port, self.acct_port, self.metrics_port = free_port(3)
        if ports:
            self.auth_port, self.acct_port = ports
        if metrics_port is not None:
            self.metrics_port = metrics_port
        self.lines: list[str] = []
        config = tmp / f"{name}.toml"
        config.write_text(
            f"[server]\nsnapshot_poll_seconds = {poll}\n"
            f"[spool]\npath = \"{tmp / (name + '-spool')}\"\n" + toml   # toml: more sections
        )
        env = dict(os.environ, DATABASE_URL=url, RADIUSD_CONFIG=str(config))
        self.args = [sys.executable, "-m", "radiusd", "serve", "--bind", "127.0.0.1", "--bind", "::1",
                     "--auth-port", str(self.auth_port), "--acct-port", str(self.acct_port),
                     "--metrics-port", str(self.metrics_port), "--workers", str(workers), *extra_args]
        self.proc = subprocess.Popen(self.args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=str(tmp))
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str) -> list[dict]:
        found = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == name:
                found.append(record)
        return found

    def last_event(self, name: str, count: int = 1, timeout: float = 3.0) -> dict:
        """The latest `name` event once at least `count` of them were logged."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if len(found) >= count or time.monotonic() > deadline:
                assert found, f"no {name} event logged"
                return found[-1]
            time.sleep(0.02)

    def wait_ready(self, workers: int = 1, timeout: float = 30) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events("server.ready")) >= workers:
                return self
            if self.proc.poll() is not None:
                self._pump.join(5)   # the rest of its output, for the message
                raise AssertionError(f"server exited {self.proc.returncode}:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.05)
        raise AssertionError("server not ready:\n" + "\n".join(self.lines[-30:]))

    def metrics(self, port: int | None = None) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port or self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def counter(self, text_name: str) -> float:
        """Sum of a counter line, e.g. 'radiusd_packets_dropped_total{port="auth",reason="unknown_nas"}'."""
        for line in self.metrics().splitlines():
            if line.startswith(text_name + " "):
                return float(line.split()[-1])
        return 0.0

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stop(self, timeout: float = 30) -> int:
        return stop_process(self.proc, self._pump, signal.SIGTERM, timeout)


def stop_process(proc: subprocess.Popen, pump: threading.Thread, sig: int, timeout: float) -> int:
    """Ask a server to stop with `sig`, kill it after `timeout`, collect its output; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    pump.join(5)
    return proc.returncode


def exchange(data: bytes, port: int, host: str = "127.0.0.1", source: str | None = None,
             timeout: float = 3.0, sock: socket.socket | None = None) -> bytes | None:
    """Send one datagram, return the reply (or None on timeout)."""
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        if source:
            sock.bind((source, 0))
    try:
        sock.settimeout(timeout)
        sock.sendto(data, (host, port))
        try:
            return sock.recv(8192)
        except socket.timeout:
            return None
    finally:
        if own:
            sock.close()
