"""The UDP server: asyncio listeners for auth and accounting around the sans-I/O endpoint.

    socket readable -> drain it (READ_BATCH datagrams) -> Endpoint.admit: the NAS by source,
                within its share (radiusd.radius.fairness) or dropped at once (nas_over_budget)
    loop turn -> decide(): DECIDE_BATCH admitted datagrams, round robin over NAS, each:
    datagram -> clock read -> Endpoint.datagram (radiusd.radius.endpoint: NAS, decode, checks,
                duplicate cache, dialect facts, plan_call) -> actions, carried out here:
      Send       sendto on the listener the request came in on
      Drop       radiusd_packets_dropped_total{reason} + one JSON log line (rate-limited)
      Count, Log metrics and log lines
      Authorize  ReservationBatcher (one thread: every waiting call plan decided in one store
                 transaction, results back in one loop callback per batch) -> Endpoint.authorized
      Record     AccountingWriter.submit -> once the record is durable (store or fsync'ed spool)
                 Endpoint.recorded -> Accounting-Response; otherwise no answer

The admin data snapshot is reloaded in the background when the store version counter moves
(poll every `snapshot_poll_seconds`), on SIGHUP, and swapped in atomically together with the NAS
lookup table. A worker of `--workers N` gets its snapshot from the supervisor, which also reloads
it (radiusd.radius.supervisor): such a worker only checks the version (the store_up state).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import errno
import gc
import ipaddress
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from radiusd.config import Settings
from radiusd.core.decision import Reject
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import Snapshot
from radiusd.db import current_store_version, open_store, safe_url
from radiusd.logging_setup import configure, get_logger, log_line
from radiusd.metrics import Metrics, MetricsServer, WorkerReport, supervised
from radiusd.pipeline.accounting_writer import AccountingWriter
from radiusd.pipeline.reservation_batcher import ReservationBatcher
from radiusd.radius.codec import DictionaryError, load_dictionary
from radiusd.radius.endpoint import (
    ACCT, AUTH, Authorize, Count, Drop, EdgeState, Endpoint, LearnMessageAuthenticator, Log, Now, Record, Send,
)
from radiusd.radius.fairness import ADAPT_WINDOW, FairnessLimits
from radiusd.radius.nas_table import NasTable
from radiusd.store import sweeper
from radiusd.store.nas_learning import learned_message_authenticator, record_message_authenticator_seen
from radiusd.store.snapshot_loader import load_snapshot_from

UDP_RCVBUF = 4 * 1024 * 1024   # per listening socket (the kernel reports twice this: bookkeeping)
READ_BATCH = 20000    # datagrams read per socket readiness at most: reading must outrun any
                      # sender (a read or a refusal costs a few µs; a decision ~100 times more)
READ_SIZE = 8192      # bytes per recvfrom: above RADIUS's 4,096, so an oversized packet is seen whole
DECIDE_BATCH = 64     # admitted datagrams decided per loop turn, then the sockets are drained again
# Three Python threads share the GIL in a server process: the event loop, the reservation batcher
# and the accounting writer. A thread woken by I/O (the batcher with the store's answer, the loop
# with a datagram) waits until the holder gives the GIL up, and CPython forces that only every
# switch interval: 5 ms by default, which a writer group or a decide() turn easily fills. At 1 ms
# an Access-Request waits at most ~1 ms per hand-over (it has 3: batcher wakes, store answers,
# loop delivers); see benchmarks/README.md, "Profile: edge".
GIL_SWITCH_INTERVAL = 0.001
HANDOVER_GRACE = 1.0   # seconds a replaced worker keeps serving while it waits for a quiet moment
UTC = dt.timezone.utc


class StartupError(RuntimeError):
    """The server cannot start (port taken, store unreachable); the message says why."""


# --- sockets --------------------------------------------------------------------------------

def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def bind_udp(address: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    try:
        if sock.family == socket.AF_INET6:
            # "::" and "0.0.0.0" are separate listeners; without V6ONLY they would clash.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _size_buffer(sock)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _size_buffer(sock: socket.socket) -> None:
    """A call burst must queue in the kernel, not be dropped (`Udp: RcvbufErrors`): ask for
    UDP_RCVBUF; the kernel caps it at net.core.rmem_max, which root may exceed (SO_RCVBUFFORCE)."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_RCVBUF)
            return
        except OSError:
            continue


def _skip_ipv6_error(address: str, exc: OSError) -> bool:
    return ":" in address and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def open_listeners(settings: Settings, reuse_port: bool) -> list[tuple[str, str, socket.socket]]:
    """Bind every (address, auth/acct port). A busy port -> StartupError naming it.

    Without reuse_port this doubles as the probe: a socket held by another process, even one
    bound with SO_REUSEPORT, makes bind() fail with EADDRINUSE.
    """
    log = get_logger()
    bound: list[tuple[str, str, socket.socket]] = []
    try:
        for address in settings.bind:
            for kind, port in ((AUTH, settings.auth_port), (ACCT, settings.acct_port)):
                try:
                    bound.append((kind, address, bind_udp(address, port, reuse_port)))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise StartupError(
                            f"{kind} port {port} on {address} is already in use "
                            f"(another RADIUS server running?); choose another with --{kind}-port"
                        ) from None
                    if _skip_ipv6_error(address, exc):
                        log.warning("listener.skipped", address=address, port=port, error=exc.strerror)
                        break
                    raise StartupError(f"cannot listen on {address} port {port}: {exc.strerror}") from None
        if not bound:
            raise StartupError("no address to listen on")
    except BaseException:
        for _, _, sock in bound:
            sock.close()
        raise
    return bound


def probe_ports(settings: Settings) -> None:
    """Fail with StartupError if any listener port is taken; bind nothing."""
    for _, _, sock in open_listeners(settings, reuse_port=False):
        sock.close()


# --- the server -----------------------------------------------------------------------------

class LogLimiter:
    """At most one drop log line per (port, reason, source) per `interval` seconds, so a flood
    from one address cannot flood the log; the counters still count every packet."""

    def __init__(self, interval: float = 1.0, max_keys: int = 10000, clock=time.monotonic):
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._last: dict[tuple, list] = {}   # key -> [last logged at, suppressed since]

    def allow(self, key: tuple, amount: int = 1) -> int | None:
        """None: stay quiet; else log now, reporting how many datagrams went unlogged before
        (`amount`: datagrams this line stands for, when drops are counted in bulk)."""
        now = self._clock()
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += amount
            return None
        if len(self._last) >= self.max_keys:
            self._last.clear()
        suppressed = entry[1] if entry else 0
        self._last[key] = [now, 0]
        return suppressed


HANDOVER_SIGNAL = signal.SIGUSR2


class CpuStall:
    """Seconds that tasks on this machine have waited for a CPU, in all (Linux PSI,
    /proc/pressure/cpu "some"): what a worker starved of a core by other processes feels, which
    neither its own CPU time nor its loop's busy time shows. Without PSI (an older kernel, or
    one booted with psi=0) the fairness ceiling follows the worker's own figures only, and the
    log says so once."""

    PATH = "/proc/pressure/cpu"

    def __init__(self, log):
        try:
            self._file = open(self.PATH, "rb", buffering=0)
            self()
        except (OSError, ValueError, IndexError) as exc:
            self._file = None
            log.warning("fairness.no_cpu_pressure", path=self.PATH, error=str(exc),
                        detail="the adaptive ceiling follows this worker's CPU and loop time only")

    def __call__(self) -> float:
        if self._file is None:
            return 0.0
        self._file.seek(0)
        first = self._file.read(256).split(b"\n", 1)[0]     # some avg10=.. avg60=.. avg300=.. total=<us>
        return int(first.rsplit(b"total=", 1)[1]) / 1e6


class _Sender:
    """What `Send` goes through: sendto on the listening socket (non-blocking; a UDP send that
    would block is dropped and counted, as the kernel would drop it further on)."""

    __slots__ = ("sock", "closing", "on_error")

    def __init__(self, sock: socket.socket, on_error):
        self.sock = sock
        self.closing = False
        self.on_error = on_error

    def sendto(self, data: bytes, addr) -> None:
        if self.closing:
            return self.on_error(None)   # closed for a handover: the answer cannot go out
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            self.on_error(exc)

    def is_closing(self) -> bool:
        return self.closing


class _Listener:
    """One listening socket. The loop calls `readable` when datagrams wait: it drains the socket
    (up to READ_BATCH datagrams) and hands each to the endpoint's admission, which refuses a
    NAS's excess there and then; the admitted are decided later, round robin over NAS."""

    def __init__(self, server: "RadiusServer", kind: str, sock: socket.socket):
        self.server = server
        self.kind = kind
        self.sock = sock
        self.transport = _Sender(sock, self.send_failed)

    def readable(self) -> None:
        server = self.server
        admit, state, kind = server.endpoint.admit, server.state, self.kind
        recvfrom = self.sock.recvfrom
        mono = time.monotonic()   # once per drain: the buckets need no finer time
        try:
            for _ in range(READ_BATCH):
                data, addr = recvfrom(READ_SIZE)
                admit(kind, data, addr, mono, state, self)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:   # e.g. ICMP errors reported on the socket: never fatal
            self.error_received(exc)
        except Exception:  # a bug must cost one packet, never the listener
            server.metrics.inc("radiusd_packets_dropped_total", port=kind, reason="internal_error")
            server.log.exception("packet.internal_error", port=kind, stage="admit")
        server.admitted(mono)

    def error_received(self, exc):
        self.server.log.warning("socket.error", port=self.kind, error=str(exc))

    def send_failed(self, exc: OSError | None) -> None:
        server = self.server
        if exc is None:   # the socket was closed for a handover
            server.metrics.inc("radiusd_packets_dropped_total", port=self.kind, reason="handover")
            return
        server.metrics.inc("radiusd_packets_dropped_total", port=self.kind, reason="send_failed")
        suppressed = server.drop_log_limiter.allow((self.kind, "send_failed", None))
        if suppressed is not None:
            server.log.warning("socket.send_failed", port=self.kind, error=str(exc), suppressed=suppressed or None)

    def retire(self) -> None:
        """On a handover: the kernel stops choosing this socket for new datagrams (they go to the
        successor's socket), what is queued here stays readable. Done by connecting the socket to
        its own address, a peer nothing sends from: Linux's SO_REUSEPORT selection skips a
        connected UDP socket, and a connected one matches only datagrams from its peer. Not for a
        socket bound to a wildcard address: connecting it would also fix its source address for
        the replies still to go out."""
        host, port = self.sock.getsockname()[:2]
        if ipaddress.ip_address(host.partition("%")[0]).is_unspecified:
            return
        try:
            self.sock.connect((host, port))
        except OSError as exc:   # never worse than not retiring: close() decides the same way
            self.server.log.warning("socket.retire_failed", port=self.kind, error=str(exc))

    def close_if_empty(self) -> bool:
        """Close unless a datagram waits (it must be read first); True once closed. The check and
        the close are adjacent: the window in which a datagram can still arrive is one syscall."""
        if self.transport.closing:
            return True
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return False
        except BlockingIOError:
            pass
        except OSError:   # e.g. an ICMP error queued on the socket: the reader reports it
            return False
        self.close()
        return True

    def close(self) -> None:
        if not self.transport.closing:
            self.transport.closing = True
            try:
                self.server.loop.remove_reader(self.sock.fileno())
            except (ValueError, RuntimeError):
                pass
            self.sock.close()


class RadiusServer:
    def __init__(self, settings: Settings, sessions, metrics: Metrics | None = None,
                 worker_index: int = 0, reuse_port: bool = False, run_sweeper: bool = True,
                 snapshot: Snapshot | None = None, reloaded: bool = False, board=None):
        self.settings = settings
        self._handover = False
        # A snapshot the supervisor loaded before it forked us (its pages shared by all workers):
        # the supervisor reloads and replaces the workers, so this server checks the store, never loads.
        self.preloaded = snapshot
        self.supervisor_loads = snapshot is not None
        self.reloaded = reloaded   # started on a snapshot the supervisor reloaded: counts as this worker's reload
        self.sessions = sessions
        self.metrics = metrics or Metrics()
        self.worker_index = worker_index
        self.reuse_port = reuse_port
        self.run_sweeper = run_sweeper
        self.log = get_logger().bind()   # bound once: the lazy proxy would re-bind on every line
        try:
            dictionary = load_dictionary(settings.dictionary_dir)
        except DictionaryError as exc:
            raise StartupError(str(exc)) from None
        self.endpoint = Endpoint(dictionary, settings.duplicate_cache_seconds, settings.billing_model,
                                 fairness=FairnessLimits(settings.fairness_rate, settings.fairness_burst,
                                                         settings.fairness_queue_depth, settings.fairness_in_flight,
                                                         settings.fairness_adaptive))
        self._deciding = False   # a decide() turn is scheduled
        self._busy = 0.0         # loop seconds spent reading and deciding since the fairness ceiling's last look
        self._observe_at = 0.0
        self._cpu_stall = CpuStall(self.log) if settings.fairness_adaptive else None
        self._board = board   # a BoardSlot: what the other workers hear (adaptive, supervised)
        self.state: EdgeState | None = None
        self.store_up = False
        self.drop_log_limiter = LogLimiter()
        self.store_log_limiter = LogLimiter(interval=10.0)   # store trouble: one short line per 10 s
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="store")  # snapshot, sweeper
        self.writer = None
        self.batcher: ReservationBatcher | None = None
        self.metrics_server: MetricsServer | None = None
        self.listeners: list[_Listener] = []
        self.addresses: list[tuple[str, str, int]] = []   # (kind, address, port) actually bound
        self._background: set[asyncio.Task] = set()   # snapshot poll, sweeper
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        # Accounting acknowledgements from the writer thread wait here; the first of a burst
        # wakes the loop once (one self-pipe write per committed group, not one per record).
        self._acks: deque = deque()
        self._acks_scheduled = False
        self._execute = {Send: self._send, Drop: self._drop, Count: self._count, Log: self._log,
                         Authorize: self._authorize, Record: self._record,
                         LearnMessageAuthenticator: self._learn_message_authenticator}

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if not self.reuse_port:
            probe_ports(self.settings)   # a busy port fails fast, before the spool is opened

        try:
            snapshot = self.preloaded or await self.loop.run_in_executor(self.pool, load_snapshot_from, self.sessions)
        except Exception as exc:
            raise StartupError(f"cannot load admin data from the store: {exc.__class__.__name__}: {exc}") from None
        self.preloaded = None
        self._swap(snapshot)
        if self.reloaded:
            self.metrics.inc("radiusd_snapshot_reloads_total")
        self.store_up = True
        self.batcher = ReservationBatcher(self.sessions, self.settings, deliver=self._deliver_reservations).start()
        self.writer = self._make_writer()
        self.writer.on_count = self._count_writer_event
        self.writer.start(take_over=self.reloaded)   # a successor starts beside the worker it replaces
        for kind, address, sock in open_listeners(self.settings, self.reuse_port):
            listener = _Listener(self, kind, sock)
            self.loop.add_reader(sock.fileno(), listener.readable)
            self.listeners.append(listener)
            self.addresses.append((kind, address, sock.getsockname()[1]))
        self.metrics.gauge("radiusd_snapshot_version", lambda: self.state.snapshot.version)
        self.metrics.gauge("radiusd_store_up", lambda: 1 if self.store_up else 0)
        self.metrics.gauge("radiusd_spool_depth", self.spool_depth)
        self.metrics.gauge("radiusd_accounting_lag_seconds", lambda: self.writer.lag())
        self.metrics.gauge("radiusd_accounting_queue_depth", lambda: self.writer.queue_depth())
        self.metrics.gauge("radiusd_reservation_queue_depth", lambda: self.batcher.queue_depth())
        self.metrics.gauge("radiusd_fairness_ceiling", lambda: self.endpoint.fair.ceiling or 0)
        self.metrics.gauge("radiusd_nas_message_authenticator_required",
                           lambda: self.endpoint.ma.required_count(self.state.snapshot))
        self.metrics.gauge("radiusd_nas_message_authenticator_learned",
                           lambda: self.endpoint.ma.learned_count(self.state.snapshot))
        if supervised():  # --workers N: the supervisor serves one endpoint for all workers
            self.metrics_server = WorkerReport(self.metrics, self.health, self.worker_index).start()
        elif self.settings.metrics_port:
            port = self.settings.metrics_port
            try:
                self.metrics_server = MetricsServer(self.metrics, self.health, self.settings.metrics_bind, port).start()
            except OSError as exc:
                await self.stop()
                raise StartupError(f"metrics port {port} on {self.settings.metrics_bind}: {exc.strerror}") from None
        self._spawn(self._poll_snapshot())
        if self.run_sweeper:
            self._spawn(self._sweep())
        if not self.state.snapshot.nas:
            self.log.warning("server.no_nas", detail="no NAS in the store: every packet will be dropped; add one with `radiusd nas add`")
        self.log.info(
            "server.ready", worker=self.worker_index, snapshot_version=self.state.snapshot.version,
            listeners=[f"{k}:{a}:{p}" for k, a, p in self.addresses],
            metrics_port=self.metrics_server.port if self.metrics_server else None,
        )

    def _make_writer(self) -> AccountingWriter:
        settings = self.settings
        if self.worker_index > 0:
            # A spool is owned (flock) by one process: worker 0 uses the configured path (the same
            # as a single-process server, so nothing is orphaned when the worker count changes),
            # worker i > 0 uses <spool>/worker-<i>.
            settings = replace(settings, spool_path=str(Path(settings.spool_path) / f"worker-{self.worker_index}"))
        writer = AccountingWriter(self.sessions, lambda: self.state.snapshot, settings)
        writer.groups.on_anomaly = lambda kind: self.metrics.inc("radiusd_cdr_anomalies_total", kind=kind)
        return writer

    _WRITER_EVENTS = {"timeouts": ("radiusd_store_timeouts_total", {"operation": "accounting"}),
                      "conflicts": ("radiusd_store_conflicts_total", {"operation": "accounting"}),
                      "queue_full": ("radiusd_backpressure_total", {"queue": "accounting", "reason": "queue_full"}),
                      "nas_share": ("radiusd_backpressure_total", {"queue": "accounting", "reason": "nas_share"})}

    def _count_writer_event(self, event: str, amount: int) -> None:
        """From the writer thread (prometheus counters are thread-safe); events without a metric
        (group_retries) are left to the writer's own counters."""
        if event not in self._WRITER_EVENTS:
            return
        name, labels = self._WRITER_EVENTS[event]
        self.metrics.inc(name, amount, **labels)
        if event == "timeouts":
            self._store_trouble("accounting", "store slower than store_timeout: spooling")

    def install_signal_handlers(self, sigint: bool = True) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        if sigint:  # workers leave Ctrl-C to the supervisor, which stops them in order
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        # the supervisor's "a successor serves your ports now" (radiusd.radius.supervisor)
        loop.add_signal_handler(HANDOVER_SIGNAL, self.request_handover)

    def request_stop(self) -> None:
        self._stop.set()

    def request_handover(self) -> None:
        self._handover = True
        self._stop.set()

    def request_reload(self) -> None:
        self.log.info("snapshot.reload_requested", reason="SIGHUP")
        self._reload.set()

    async def serve_forever(self) -> None:
        await self._stop.wait()
        await self.stop()

    async def stop(self) -> None:
        """New packets are dropped; decisions in flight finish (5 s at most); the accounting
        writer flushes and its acknowledgements still go out; then the sockets close.

        On a handover (a successor already serves the same ports) the sockets close before the
        writer flushes: the kernel then gives this worker's share of the datagrams to the others
        at once, instead of to a worker that would drop them for as long as its writer takes to
        flush. Closing a socket loses what is queued in it and the answers not yet sent, so the
        worker first retires its sockets (no new datagrams reach them) and keeps serving what they
        hold until a quiet moment (`_idle` and the socket empty), HANDOVER_GRACE at most. What is
        still lost (a flood leaves no quiet moment) is counted `handover`; the switch's
        retransmission reaches the successor, and accounting is idempotent per leg."""
        if self._stopping:
            return
        self._stopping = True
        if self._handover:
            for listener in self.listeners:
                listener.retire()
            deadline = time.monotonic() + HANDOVER_GRACE
            while time.monotonic() < deadline:
                # each socket closes as soon as nothing waits in it, nothing is being decided
                # and every answer is out
                if self._idle() and all([listener.close_if_empty() for listener in self.listeners]):
                    break
                await asyncio.sleep(0.001)
            for listener in self.listeners:
                listener.close()
        self.endpoint.accepting = False
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        deadline = time.monotonic() + 5
        while self.endpoint.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        if self.batcher is not None:
            await loop.run_in_executor(None, self.batcher.stop)
        if self.writer is not None:
            await loop.run_in_executor(None, self.writer.stop)
            self._drain_acks()   # the writer has stopped: its last acknowledgements are all queued
        for listener in self.listeners:
            listener.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.log.info("server.stopped", worker=self.worker_index)

    def _idle(self) -> bool:
        """Nothing admitted or deciding, and every accounting record answered: closing a socket
        with nothing queued in it now loses nothing."""
        if self.endpoint.in_flight or len(self.endpoint.fair) or self._acks:
            return False
        return not (self.writer is not None and self.writer.lag())   # 0 only when nothing waits or is being written

    def _spawn(self, coro) -> asyncio.Task:
        """A background task (snapshot poll, sweeper), cancelled at stop."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- snapshot -----------------------------------------------------------------------

    def _swap(self, snapshot: Snapshot) -> None:
        self.state = EdgeState(snapshot, NasTable.from_snapshot(snapshot))
        self.endpoint.ma.snapshot_loaded()
        # The snapshot is millions of long-lived objects: without this every collection of the
        # oldest generation walks all of them (measured: ~15 % of the per-packet CPU at 100,000
        # accounts). Frozen objects are still freed by reference counting when a newer snapshot
        # replaces them (snapshot records hold no reference cycles).
        gc.freeze()

    def _load_if_changed(self, known_version: int, force: bool) -> tuple[Snapshot | None, set[int]]:
        """The new snapshot (None: unchanged, or the supervisor loads them) and the NAS whose
        Message-Authenticator the store has learned, read after the snapshot so it is as new."""
        snapshot = None
        if not self.supervisor_loads:
            if not force:
                with self.sessions() as session:
                    if current_store_version(session) == known_version:   # the usual poll: one session
                        return None, learned_message_authenticator(session)
            snapshot = load_snapshot_from(self.sessions)
        with self.sessions() as session:   # also the store_up check of a supervised worker
            return snapshot, learned_message_authenticator(session)

    async def _poll_snapshot(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._reload.wait(), self.settings.snapshot_poll_seconds)
            except asyncio.TimeoutError:
                pass
            force = self._reload.is_set()
            self._reload.clear()
            await self.reload(force)

    async def reload(self, force: bool = False) -> None:
        try:
            snapshot, learned = await self.loop.run_in_executor(self.pool, self._load_if_changed,
                                                                self.state.snapshot.version, force)
        except Exception as exc:
            self.metrics.inc("radiusd_store_errors_total", operation="snapshot")
            if self.store_up:
                self.log.error("store.unreachable", operation="snapshot", error=exc.__class__.__name__)
            self.store_up = False
            return
        if not self.store_up:
            self.log.info("store.reachable")
        self.store_up = True
        if snapshot is not None:
            old = self.state.snapshot.version
            self._swap(snapshot)
            self.metrics.inc("radiusd_snapshot_reloads_total")
            self.log.info("snapshot.loaded", version=snapshot.version, previous=old,
                          nas=len(snapshot.nas), accounts=len(snapshot.accounts))
        for nas in self.endpoint.ma.store_read(learned, self.state.snapshot):
            self.log.info("nas.message_authenticator_shared", nas=nas.name, worker=self.worker_index,
                          detail="learned by another worker or server: required from now on")

    async def _sweep(self) -> None:
        interval = max(1.0, min(30.0, self.settings.reservation_ttl / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                now = dt.datetime.now(UTC)
                done = await self.loop.run_in_executor(self.pool, sweeper.sweep, self.sessions, now, self.settings)
                if done.get("cdr_partitions_skipped"):  # months left to `db partitions --move-default`
                    self.metrics.inc("radiusd_cdr_partitions_skipped_total", done["cdr_partitions_skipped"])
                for kind, fixed in (done.get("usage_drift") or {}).items():
                    if fixed:
                        self.metrics.inc("radiusd_usage_drift_total", fixed, kind=kind)
            except Exception as exc:
                self.metrics.inc("radiusd_store_errors_total", operation="sweep")
                self.log.warning("sweeper.failed", error=exc.__class__.__name__)

    # --- health -------------------------------------------------------------------------

    def spool_depth(self) -> int:
        try:
            return int(self.writer.spool_depth()) if self.writer is not None else 0
        except Exception:
            return -1

    def health(self) -> tuple[bool, dict]:
        """(ok, details). Not ok: the store is unreachable, or "degraded": the accounting writer
        is behind (oldest unacknowledged record older than `degraded_after`, or its queue full)
        or an admission batch has been stuck in the store that long."""
        details = {
            "worker": self.worker_index,
            "snapshot_version": self.state.snapshot.version if self.state else None,
            "store": "up" if self.store_up else "unreachable",
            "spool_depth": self.spool_depth(),
            "nas": len(self.state.snapshot.nas) if self.state else 0,
        }
        behind = []
        writer, batcher, limit = self.writer, self.batcher, self.settings.degraded_after
        if writer is not None:
            lag, depth = writer.lag(), writer.queue_depth()
            details.update(accounting_lag_seconds=round(lag, 3), accounting_queue=depth)
            if lag > limit:
                behind.append(f"accounting lag {lag:.1f} s")
            if depth >= writer.queue_max:
                behind.append("accounting queue full")
            if not writer.store_ok:
                behind.append("accounting spooled: the store is too slow or away")
        if batcher is not None:
            stall = batcher.stall()
            details["reservation_queue"] = batcher.queue_depth()
            if stall > limit:
                behind.append(f"admission batch in the store for {stall:.1f} s")
            elif batcher.stalled():
                behind.append("admission store ran out of time")
        if self.store_up and behind:
            details.update(status="degraded", reason="; ".join(behind))
            return False, details
        return self.store_up, details

    # --- packets: the endpoint decides, this carries out ----------------------------------

    @staticmethod
    def now() -> Now:
        return Now(dt.datetime.now(UTC), time.monotonic())

    def handle_datagram(self, listener: _Listener, data: bytes, addr) -> None:
        self.execute(self.endpoint.datagram(listener.kind, data, addr, self.now(), self.state, listener))

    def admitted(self, began: float) -> None:
        """After a socket drain: count what admission refused, and make sure a decide() turn comes."""
        self._busy_since(began)
        refused = self.endpoint.over_budget(self.state)
        if refused:
            self.execute(refused)
        if not self._deciding and len(self.endpoint.fair):
            self._deciding = True
            self.loop.call_soon(self.decide)

    def decide(self) -> None:
        """Decide up to DECIDE_BATCH admitted datagrams, one NAS per turn; the rest wait for the
        next loop turn, after the sockets have been drained again."""
        self._deciding = False
        began = time.monotonic()
        take = self.endpoint.next_admitted
        for _ in range(DECIDE_BATCH):
            item = take()
            if item is None:
                break
            port, data, addr, via = item
            try:
                self.execute(self.endpoint.datagram(port, data, addr, self.now(), self.state, via))
            except Exception:  # a bug must cost one packet, never the listener
                self.metrics.inc("radiusd_packets_dropped_total", port=port, reason="internal_error")
                self.log.exception("packet.internal_error", port=port, source=addr[0])
        self._busy_since(began)
        if len(self.endpoint.fair):
            self._deciding = True
            self.loop.call_soon(self.decide)

    def _busy_since(self, began: float) -> None:
        """Tell the fairness ceiling how long the loop just worked (reading or deciding)."""
        if self._cpu_stall is None:   # [fairness] adaptive = false
            return
        now = time.monotonic()
        self._busy += now - began
        if now < self._observe_at:
            return
        self._observe_at = now + ADAPT_WINDOW
        fair = self.endpoint.fair
        before = fair.ceiling
        busy, self._busy = self._busy, 0.0
        board = self._board
        fair.observe(now, busy, time.process_time(), self._cpu_stall(), board.read() if board is not None else ())
        if board is not None:
            board.post(now, fair.heard)
        if (before is None) == (fair.ceiling is None):
            return   # none, or moved (the gauge shows it): one line when it comes and when it goes
        if fair.ceiling is not None:
            self.log.warning("fairness.ceiling", worker=self.worker_index, datagrams_per_s=round(fair.ceiling),
                             detail="NAS contend and the worker is busy: no NAS gets more than this per second")
        else:
            self.log.info("fairness.ceiling_lifted", worker=self.worker_index)

    def execute(self, actions: list) -> None:
        execute = self._execute
        for action in actions:
            execute[type(action)](action)

    def _send(self, action: Send) -> None:
        transport = action.via.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(action.data, action.addr)

    def _drop(self, action: Drop) -> None:
        self.metrics.inc("radiusd_packets_dropped_total", action.amount, port=action.port, reason=action.reason)
        suppressed = self.drop_log_limiter.allow((action.port, action.reason, action.source), action.amount)
        if suppressed is not None:
            if action.amount > 1:
                action.fields["datagrams"] = action.amount
            self.log.warning("packet.dropped", port=action.port, reason=action.reason, source=action.source,
                             nas=action.nas, suppressed=suppressed or None, **action.fields)

    def _count(self, action: Count) -> None:
        self.metrics.inc(action.metric, action.amount, **action.labels)

    def _log(self, action: Log) -> None:
        log_line(action.level, action.event, action.fields)   # the per-request line: no structlog chain

    # --- authorization ------------------------------------------------------------------

    def _authorize(self, action: Authorize) -> None:
        request = action.request
        if self.batcher is None:
            plan = request.plan
            reject = Reject(RejectReason.SERVICE_UNAVAILABLE, plan.account.id, plan.client.id, "no store")
            return self.execute(self.endpoint.authorized(request, reject, self.now()))
        refused = self.batcher.submit(request.plan, request.received.utc, request)
        if refused is not None:   # the store is behind: code 8 now rather than an answer too late
            self.metrics.inc("radiusd_backpressure_total", queue="reservation", reason=refused)
            self._store_trouble("reserve_call", refused)
            plan = request.plan
            reject = Reject(RejectReason.SERVICE_UNAVAILABLE, plan.account.id, plan.client.id, refused)
            self.execute(self.endpoint.authorized(request, reject, self.now()))

    def _store_trouble(self, operation: str, error: str) -> None:
        """One short log line per operation per 10 s (an outage must not log per request)."""
        suppressed = self.store_log_limiter.allow((operation,))
        if suppressed is not None:
            self.log.error("store.unreachable", operation=operation, error=error[:120],
                           suppressed=suppressed or None)

    def _too_late(self, port: str, request, now: Now) -> bool:
        """The switch stopped waiting for this answer (`answer_deadline`): drop it, counted, and
        let its retransmission be decided afresh (a late answer would be taken for the next one)."""
        if now.mono - request.received.mono <= self.settings.answer_deadline:
            return False
        self.endpoint.caches[port].forget(request.key, request.authenticator)
        self.metrics.inc("radiusd_packets_dropped_total", port=port, reason="too_late")
        return True

    def _deliver_reservations(self, pairs) -> None:
        """From the batcher thread: one hop into the event loop per batch, not per request."""
        self.loop.call_soon_threadsafe(self._reserved, pairs)

    def _reserved(self, pairs) -> None:
        now = self.now()
        for request, result in pairs:
            try:
                if self._too_late(AUTH, request, now):
                    self.endpoint.gave_up(request)   # decided (a reservation expires by itself), not answered
                    continue
                if isinstance(result, BaseException):
                    result = self._store_failure(request, result)
                self.execute(self.endpoint.authorized(request, result, now))
            except Exception:  # a bug must cost one request, never the batch
                self.metrics.inc("radiusd_packets_dropped_total", port=AUTH, reason="internal_error")
                self.log.exception("packet.internal_error", port=AUTH, source=request.source)

    def _store_failure(self, request, exc: BaseException) -> Reject:
        plan, nas = request.plan, request.nas
        self.metrics.inc("radiusd_store_errors_total", operation="reserve_call")
        if isinstance(exc, SQLAlchemyError):
            code = getattr(getattr(exc, "orig", None), "pgcode", None)
            if code in ("55P03", "57014"):
                self.metrics.inc("radiusd_store_timeouts_total", operation="reserve_call")
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            self._store_trouble("reserve_call", f"{exc.__class__.__name__}: {first[0] if first else ''}")
            return Reject(RejectReason.SERVICE_UNAVAILABLE, plan.account.id, plan.client.id, "store unreachable")
        if self.store_log_limiter.allow(("internal_error",)) is not None:
            self.log.error("auth.internal_error", nas=nas.name, stage="reserve_call", exc_info=exc)
        return Reject(RejectReason.SERVICE_UNAVAILABLE, plan.account.id, plan.client.id, "internal error")

    def _learn_message_authenticator(self, action: LearnMessageAuthenticator) -> None:
        """Store that an `auto` NAS sent Message-Authenticator, off the event loop."""
        nas = action.nas

        def done(future) -> None:  # in the store thread
            error = future.exception()
            try:
                self.loop.call_soon_threadsafe(
                    lambda: self.execute(self.endpoint.message_authenticator_recorded(nas, error)))
            except RuntimeError:  # the loop is closed: the server stopped meanwhile
                pass

        try:
            self.pool.submit(record_message_authenticator_seen, self.sessions, nas.id,
                             self.now().utc).add_done_callback(done)
        except RuntimeError as exc:  # the store pool is already shut down (stopping)
            self.execute(self.endpoint.message_authenticator_recorded(nas, exc))

    # --- accounting ---------------------------------------------------------------------

    def _record(self, action: Record) -> None:
        request = action.request
        if self.writer is None:
            return self.execute(self.endpoint.not_recorded(request, "no accounting writer"))
        acks = self._acks

        def on_done(ok: bool) -> None:  # called from the writer thread
            acks.append((request, ok))
            if not self._acks_scheduled:
                self._acks_scheduled = True
                try:
                    self.loop.call_soon_threadsafe(self._drain_acks)
                except RuntimeError:
                    pass  # loop closed during shutdown: no answer, the NAS retransmits to the next run

        try:
            self.writer.submit(request.facts, on_done)
        except Exception as exc:
            self.execute(self.endpoint.not_recorded(request, exc.__class__.__name__))

    def _drain_acks(self) -> None:
        """Answer every acknowledged Accounting-Request waiting in `_acks` (a group's worth)."""
        # Reset before draining: an ack appended after this point either is drained below or
        # schedules the next call (at worst one extra, empty drain).
        self._acks_scheduled = False
        acks = self._acks
        done = []
        while acks:
            done.append(acks.popleft())
        if not done:
            return
        now = self.now()
        late = {id(request) for request, ok in done if ok and self._too_late(ACCT, request, now)}
        if late:   # durable, but the switch gave up on this answer: its retransmission is idempotent
            done = [(request, ok) for request, ok in done if id(request) not in late]
        try:
            self.execute(self.endpoint.recorded(done, now))
        except Exception:
            self.log.exception("packet.internal_error", port=ACCT, source=done[0][0].source)


# --- running --------------------------------------------------------------------------------

def open_server_store(settings: Settings):
    """(engine, sessionmaker) of the configured store, sealed secrets openable; StartupError if not."""
    from radiusd.errors import UserError
    from radiusd.store.sealing import attach_key_file

    try:
        # `db init` (or the demo) makes a store; a server pointed at a wrong URL must not make an empty one
        engine, sessions = open_store(settings.database_url, create=False)
        attach_key_file(sessions, settings.secrets_key_file, settings.database_url)
    except UserError as exc:  # no radiusd store at this URL, or not a sqlite/postgresql URL
        raise StartupError(str(exc)) from None
    except Exception as exc:  # missing driver, server down
        raise StartupError(f"cannot open the store {safe_url(settings.database_url)}: {exc.__class__.__name__}: {exc}") from None
    return engine, sessions


async def _run(settings: Settings, worker_index: int, reuse_port: bool, run_sweeper: bool,
               snapshot: Snapshot | None = None, reloaded: bool = False, board=None) -> int:
    _, sessions = open_server_store(settings)
    server = RadiusServer(settings, sessions, worker_index=worker_index, reuse_port=reuse_port,
                          run_sweeper=run_sweeper, snapshot=snapshot, reloaded=reloaded, board=board)
    try:
        await server.start()
    except StartupError:
        await server.stop()
        raise
    server.install_signal_handlers(sigint=not reuse_port)
    await server.serve_forever()
    return 0


def run_server(settings: Settings, worker_index: int = 0, reuse_port: bool = False, run_sweeper: bool = True,
               snapshot: Snapshot | None = None, reloaded: bool = False, board=None) -> int:
    """Run one server process in the foreground until SIGTERM/SIGINT; returns the exit code.
    `board`: this worker's BoardSlot when the supervisor's workers share the fairness board."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    return asyncio.run(_run(settings, worker_index, reuse_port, run_sweeper, snapshot, reloaded, board))


def worker_main(settings: Settings, worker_index: int, snapshot: Snapshot | None = None,
                reloaded: bool = False, board=None) -> None:
    """Entry point of a worker process started by the supervisor."""
    configure(settings.log_level, worker=worker_index)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; Ctrl-C reaches it
    try:
        code = run_server(settings, worker_index, reuse_port=True, run_sweeper=(worker_index == 0),
                          snapshot=snapshot, reloaded=reloaded, board=board)
    except StartupError as exc:
        get_logger().error("server.startup_failed", worker=worker_index, error=str(exc))
        code = 2
    sys.exit(code)


def effective_workers(settings: Settings) -> int:
    return settings.workers if settings.workers > 0 else (os.cpu_count() or 1)
