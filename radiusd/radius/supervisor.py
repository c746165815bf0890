"""`--workers N`: one supervisor process, N worker processes sharing the ports and one snapshot.

The supervisor probe-binds every listener port WITHOUT SO_REUSEPORT (a busy port -> clear
error, exit 2), releases them, and starts N workers that each bind the same ports with
SO_REUSEPORT. Linux then hashes each datagram by its source address and port to one worker's
socket, so all retransmissions of a NAS's request reach the same worker and each worker's
RFC 5080 duplicate cache stays correct without sharing state. (The hash changes when the set
of sockets changes, i.e. while a worker restarts: a retransmission in that moment may be
decided twice, which the store's capacity reservation, keyed by call id, tolerates.)

One snapshot for all workers: the supervisor loads the admin data snapshot, freezes it out of
the garbage collector (`gc.freeze()`: a collection would write to every object's header and so
copy every page) and forks the workers, which answer from the pages they share with it instead
of each loading a copy (1,000,000 accounts: one snapshot's memory, not N). Only what a worker
touches (the reference counts of the records it reads) becomes its own copy.

Reload: the supervisor reads the store version every `snapshot_poll_seconds` (and at once on
SIGHUP); when it moved it loads the new snapshot (in a thread: the supervisor keeps watching its
workers meanwhile), then replaces the workers one at a time, make before break: fork worker i's
successor from the new snapshot beside it (their listeners share the ports, SO_REUSEPORT), wait
until the successor reports ready, then stop the old worker (it flushes its accounting writer,
like any stop; the successor takes its spool once it lets it go), and go on with i + 1. Every
port always has a worker serving it; only datagrams already queued in the stopping worker's
socket when it closes go unanswered (the NAS retransmits). Memory holds two snapshots only while
a roll lasts (the old one is freed when its last worker exits).
Workers check the store version too (for /health's store state) but never load.

With the adaptive fairness ceiling on, the workers also share one small board in memory made
before the first fork (radiusd.radius.fairness_board): the NAS each heard lately and how much
they send, so a worker that carries a flood clamps it for a NAS only another worker hears.

Workers are independent servers otherwise: own thread pool, own accounting spool (worker 0: the
configured spool path, worker i: `<spool>/worker-<i>`). One `/metrics` and `/health` endpoint on
metrics_port, served here for all workers (radiusd.metrics: the workers' counters meet in a
private directory of this supervisor, removed at exit). Worker 0 also runs the store sweeper.
SIGTERM/SIGINT to the supervisor stops every worker (each flushes its accounting writer) and
exits 0. A worker that dies is restarted from the current snapshot.
"""
from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait

from radiusd.config import Settings
from radiusd.core.snapshot import Snapshot
from radiusd.db import current_store_version
from radiusd.logging_setup import get_logger
from radiusd.metrics import MetricsServer, ServerMetrics
from radiusd.radius.fairness_board import FairnessBoard
from radiusd.radius.server import HANDOVER_SIGNAL, StartupError, open_server_store, probe_ports, worker_main
from radiusd.store.snapshot_loader import load_snapshot_from

STARTUP_FAILED = 2
STOP_SECONDS = 40          # a stopping worker flushes its accounting writer; past this it is killed
READY_SECONDS = 60         # a replacement worker that has not reported by then: the roll goes on


class SnapshotSource:
    """The supervisor's own store connection: the version check and the snapshot load."""

    def __init__(self, settings: Settings):
        self.engine, self.sessions = open_server_store(settings)

    def load_if_changed(self, known_version: int | None, force: bool) -> Snapshot | None:
        if not force and known_version is not None:
            with self.sessions() as session:
                if current_store_version(session) == known_version:
                    return None
        return load_snapshot_from(self.sessions)

    def before_fork(self) -> None:
        # no pooled connection may be inherited: a child closing its copy would end ours
        self.engine.dispose()


def _worker(settings: Settings, index: int, snapshot: Snapshot, reloaded: bool, metrics_endpoint, board) -> None:
    """First code of a forked worker: undo what it inherited from the supervisor, then serve."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # the supervisor's handlers are not ours
    signal.signal(signal.SIGHUP, signal.SIG_IGN)    # reloads are the supervisor's; ours come with the server
    if metrics_endpoint is not None:
        metrics_endpoint.httpd.socket.close()       # the supervisor's listening socket, not ours
    # prometheus_client chose its value class at import, before the supervisor exported the
    # multiprocess directory: workers keep their counters in that directory's files
    import prometheus_client.values

    prometheus_client.values.ValueClass = prometheus_client.values.get_value_class()
    worker_main(settings, index, snapshot, reloaded, board)


def run_supervisor(settings: Settings, workers: int) -> int:
    log = get_logger()
    if 0 in (settings.auth_port, settings.acct_port):
        raise StartupError("port 0 (any free port) needs --workers 1: workers must share fixed ports")
    probe_ports(settings)
    source = SnapshotSource(settings)
    started = time.monotonic()
    try:
        snapshot = source.load_if_changed(None, True)
    except Exception as exc:
        source.engine.dispose()
        raise StartupError(f"cannot load admin data from the store: {exc.__class__.__name__}: {exc}") from None
    gc.freeze()   # before the first fork: no collection in any process walks (and copies) the snapshot
    log.info("supervisor.snapshot_loaded", version=snapshot.version, accounts=len(snapshot.accounts),
             seconds=round(time.monotonic() - started, 2))
    ctx = multiprocessing.get_context("fork")
    loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
    stopping = False
    reload_forced = False

    def on_stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    def on_hup(_signum, _frame):
        nonlocal reload_forced
        reload_forced = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    procs: dict = {}
    endpoint = None

    versions: dict[int, int] = {}   # worker -> the snapshot version it was started on
    # what each worker's adaptive fairness ceiling hears of the others' NAS (made before any fork)
    board = FairnessBoard(workers) if settings.fairness_adaptive else None
    generations: dict[int, int] = {}   # worker -> processes started for it: a successor posts in the other slot

    def start(index: int, successor: bool = False):
        source.before_fork()
        # A successor (or a worker on a newer snapshot than its index had) counts the reload
        # (radiusd_snapshot_reloads_total) and takes the spool over once its predecessor lets
        # go; a SIGHUP reload rolls the workers on the same version, so the version alone won't do.
        reloaded = successor or versions.get(index, snapshot.version) != snapshot.version
        versions[index] = snapshot.version
        generations[index] = generations.get(index, -1) + 1
        posts = board.slot(2 * index + generations[index] % 2) if board is not None else None
        proc = ctx.Process(target=_worker, args=(settings, index, snapshot, reloaded, endpoint, posts),
                           name=f"radiusd-worker-{index}")
        proc.start()
        return proc

    metrics = ServerMetrics.open(lambda: {i: (p.pid if p.is_alive() else None) for i, p in list(procs.items())})
    try:
        endpoint = (MetricsServer(metrics, metrics.health, settings.metrics_bind, settings.metrics_port).start()
                    if settings.metrics_port else None)
    except OSError as exc:
        metrics.close()
        source.engine.dispose()
        raise StartupError(f"metrics port {settings.metrics_port} on {settings.metrics_bind}: {exc.strerror}") from None
    loading: concurrent.futures.Future | None = None
    next_check = time.monotonic() + settings.snapshot_poll_seconds
    store_up = True
    rolling: list[int] = []            # workers still to be replaced by ones on the new snapshot
    # Make before break: a successor starts beside the worker it replaces (the listeners share the
    # ports, SO_REUSEPORT), and only once it serves is the predecessor told to stop.
    awaiting: tuple[int, int, float, object] | None = None   # (worker, pid, deadline, predecessor)
    retiring: tuple[object, float] | None = None   # (predecessor, kill deadline): told to stop
    exit_code = 0
    try:
        procs.update({index: start(index) for index in range(workers)})
        started_at = {index: time.monotonic() for index in procs}
        log.info("supervisor.started", workers=workers, pids=[p.pid for p in procs.values()],
                 metrics_port=settings.metrics_port or None, metrics_dir=metrics.directory)
        while not stopping:
            now = time.monotonic()
            # --- reload: check the version, load in the thread, then roll the workers over
            if loading is None and not rolling and retiring is None and awaiting is None and (
                    reload_forced or now >= next_check):
                if reload_forced:
                    log.info("snapshot.reload_requested", reason="SIGHUP")
                loading = loader.submit(source.load_if_changed, snapshot.version, reload_forced)
                reload_forced = False
                next_check = now + settings.snapshot_poll_seconds
            if loading is not None and loading.done():
                try:
                    loaded = loading.result()
                except Exception as exc:
                    if store_up:
                        log.error("store.unreachable", operation="snapshot", error=exc.__class__.__name__)
                    store_up = False
                else:
                    if not store_up:
                        log.info("store.reachable")
                    store_up = True
                    if loaded is not None:
                        log.info("snapshot.loaded", version=loaded.version, previous=snapshot.version,
                                 nas=len(loaded.nas), accounts=len(loaded.accounts))
                        snapshot = loaded   # the old one lives on in the old workers until they exit
                        gc.freeze()
                        rolling = sorted(procs)
                loading = loaded = None
            if rolling and retiring is None and awaiting is None and loading is None:
                index = rolling.pop(0)
                predecessor = procs[index]
                procs[index] = start(index, successor=True)
                started_at[index] = time.monotonic()
                awaiting = (index, procs[index].pid, now + READY_SECONDS, predecessor)
            if awaiting is not None and not procs[awaiting[0]].is_alive():
                # the successor died before serving: the worker it was to replace goes on
                index, pid, _, predecessor = awaiting
                awaiting = None
                metrics.worker_exited(pid)
                log.error("supervisor.successor_failed", worker=index, pid=pid, exit_code=procs[index].exitcode,
                          kept_pid=predecessor.pid)
                procs[index] = predecessor
            if awaiting is not None:
                index, pid, deadline, predecessor = awaiting
                if _reported(metrics, index, pid) or now > deadline:
                    awaiting = None
                    _signal(predecessor, HANDOVER_SIGNAL)   # SIGTERM, its sockets closed first
                    retiring = (predecessor, now + STOP_SECONDS)
                    log.info("supervisor.worker_replaced", worker=index, old_pid=predecessor.pid,
                             pid=procs[index].pid, snapshot_version=snapshot.version)
            if retiring is not None:
                predecessor, kill_at = retiring
                if not predecessor.is_alive():
                    metrics.worker_exited(predecessor.pid)
                    predecessor.join(1)
                    retiring = None
                elif now > kill_at:
                    log.error("supervisor.worker_kill", pid=predecessor.pid)
                    predecessor.kill()
            alive = [p.sentinel for p in procs.values() if p.is_alive()]
            if retiring is not None and retiring[0].is_alive():
                alive.append(retiring[0].sentinel)
            wait(alive, timeout=0.2 if (loading or rolling or retiring or awaiting) else 0.5)
            # --- workers that exited: replaced (a roll) or restarted (a death)
            for index, proc in list(procs.items()):
                if proc.is_alive() or stopping:
                    continue
                if loading is not None and not loading.done():
                    continue   # no fork while the loader thread holds a store connection
                metrics.worker_exited(proc.pid)
                code = proc.exitcode
                if code == STARTUP_FAILED:
                    log.error("supervisor.worker_failed_to_start", worker=index)
                    stopping, exit_code = True, STARTUP_FAILED
                    break
                log.error("supervisor.worker_died", worker=index, exit_code=code)
                if time.monotonic() - started_at[index] < 1.0:
                    time.sleep(1.0)  # don't spin on a worker that dies at once
                procs[index] = start(index)
                started_at[index] = time.monotonic()
        everyone = list(procs.values())
        for extra in (awaiting[3] if awaiting else None, retiring[0] if retiring else None):
            if extra is not None:
                everyone.append(extra)
        for proc in everyone:
            if proc.is_alive():
                _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in everyone:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("supervisor.worker_kill", pid=proc.pid)
                proc.kill()
                proc.join(5)
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
        source.engine.dispose()
        if endpoint is not None:
            endpoint.stop()
        metrics.close()
    log.info("supervisor.stopped", exit_code=exit_code)
    return exit_code


def _reported(metrics: ServerMetrics, index: int, pid: int) -> bool:
    """Worker `index` (process `pid`) has started serving: it wrote its first health report."""
    _, summary = metrics.health()
    return any(w["worker"] == index and w["pid"] == pid and w.get("status") != "starting"
               for w in summary["workers"])


def _signal(proc, signum) -> None:
    try:
        os.kill(proc.pid, signum)
    except ProcessLookupError:
        pass
