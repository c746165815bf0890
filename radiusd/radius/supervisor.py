"""`--workers N`: one supervisor process, N worker processes sharing the ports.

The supervisor probe-binds every listener port WITHOUT SO_REUSEPORT (a busy port -> clear
error, exit 2), releases them, and starts N workers that each bind the same ports with
SO_REUSEPORT. Linux then hashes each datagram by its source address and port to one worker's
socket, so all retransmissions of a NAS's request reach the same worker and each worker's
RFC 5080 duplicate cache stays correct without sharing state. (The hash changes when the set
of sockets changes, i.e. while a worker restarts: a retransmission in that moment may be
decided twice, which the store's capacity reservation, keyed by call id, tolerates.)

Workers are independent servers: own snapshot, own thread pool, own accounting spool
(worker 0: the configured spool path, worker i: `<spool>/worker-<i>`). One `/metrics` and
`/health` endpoint on metrics_port, served here for all workers (radiusd.metrics: the workers'
counters meet in a private directory of this supervisor, removed at exit). Worker 0 also runs
the store sweeper. SIGTERM/SIGINT to the supervisor stops every worker (each flushes its accounting
writer) and exits 0; SIGHUP is passed on (snapshot reload). A worker that dies is restarted.
"""
from __future__ import annotations

import multiprocessing
import signal
import time
from multiprocessing.connection import wait

from radiusd.config import Settings
from radiusd.logging_setup import get_logger
from radiusd.metrics import MetricsServer, ServerMetrics
from radiusd.radius.server import StartupError, probe_ports, worker_main

STARTUP_FAILED = 2


def run_supervisor(settings: Settings, workers: int) -> int:
    log = get_logger()
    if 0 in (settings.auth_port, settings.acct_port):
        raise StartupError("port 0 (any free port) needs --workers 1: workers must share fixed ports")
    probe_ports(settings)
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    received_hup = False

    def on_stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    def on_hup(_signum, _frame):
        nonlocal received_hup
        received_hup = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    def start(index: int):
        proc = ctx.Process(target=worker_main, args=(settings, index), name=f"radiusd-worker-{index}")
        proc.start()
        return proc

    procs: dict = {}
    metrics = ServerMetrics.open(lambda: {i: (p.pid if p.is_alive() else None) for i, p in list(procs.items())})
    try:
        endpoint = (MetricsServer(metrics, metrics.health, settings.metrics_bind, settings.metrics_port).start()
                    if settings.metrics_port else None)
    except OSError as exc:
        metrics.close()
        raise StartupError(f"metrics port {settings.metrics_port} on {settings.metrics_bind}: {exc.strerror}") from None
    try:
        procs.update({index: start(index) for index in range(workers)})
        started_at = {index: time.monotonic() for index in procs}
        log.info("supervisor.started", workers=workers, pids=[p.pid for p in procs.values()],
                 metrics_port=settings.metrics_port or None, metrics_dir=metrics.directory)
        exit_code = 0
        while not stopping:
            if received_hup:
                received_hup = False
                for proc in procs.values():
                    if proc.is_alive():
                        _signal(proc, signal.SIGHUP)
            wait([p.sentinel for p in procs.values()], timeout=0.5)
            for index, proc in list(procs.items()):
                if proc.is_alive() or stopping:
                    continue
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
        for proc in procs.values():
            if proc.is_alive():
                _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 40
        for proc in procs.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("supervisor.worker_kill", pid=proc.pid)
                proc.kill()
                proc.join(5)
    finally:
        if endpoint is not None:
            endpoint.stop()
        metrics.close()
    log.info("supervisor.stopped", exit_code=exit_code)
    return exit_code


def _signal(proc, signum) -> None:
    import os

    try:
        os.kill(proc.pid, signum)
    except ProcessLookupError:
        pass
