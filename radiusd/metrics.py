"""Counters and gauges (prometheus_client) and the HTTP endpoint: `/metrics` and `/health`.

Counters (all `_total`, labels in braces):
- radiusd_packets_received_total{port}                 every datagram, port = auth | acct
- radiusd_packets_dropped_total{port,reason}           silently dropped, by reason: unknown_nas,
  inactive_nas, malformed, unsupported_code, bad_authenticator, bad_message_authenticator,
  missing_message_authenticator, proxy_state_without_message_authenticator, duplicate_in_progress, missing_status_type,
  unsupported_status_type, missing_session_id, not_recorded, shutting_down, overloaded, internal_error,
  nas_over_budget (a NAS sent more than its [fairness] share: refused before decoding), send_failed
- radiusd_nas_over_budget_total{port,nas,limit}        the nas_over_budget drops by NAS name ("unknown":
  sources in no NAS) and the [fairness] limit it ran into: over_rate (rate/burst or the adaptive
  ceiling), queue_full (depth), in_flight
- radiusd_duplicates_total{port,kind}                  kind = replayed | in_progress | conflict
- radiusd_auth_decisions_total{outcome,reason}         outcome = accept | reject; reason = the
  RejectReason name in lower case (accept: "none")
- radiusd_status_server_total{port}                    Status-Server answered
- radiusd_accounting_total{status}                     Accounting-Requests answered, by status
- radiusd_store_errors_total{operation}                reserve_call / snapshot / accounting failures
- radiusd_snapshot_reloads_total                       snapshots swapped in
- radiusd_backpressure_total{queue,reason}             requests refused at once because the store is
  behind: queue = accounting | reservation, reason = queue_full | store_stuck
- radiusd_store_timeouts_total{operation}              store transactions past store_timeout (lock or
  statement), operation = accounting | reserve_call
- radiusd_store_conflicts_total{operation}             deadlocks / serialization failures retried
- radiusd_cdr_anomalies_total{kind}                    CDRs written with a corrected anomaly, by kind
  (radiusd.core.sanity: time_out_of_bounds, disconnect_before_connect, duration_capped, identifier_escaped)
- radiusd_usage_drift_total{kind}                      usage counters (kind = client | account) the
  sweeper found off from the open legs and recomputed (radiusd.store.sweeper; should stay 0)
- radiusd_cdr_partitions_skipped_total                 per sweep, months it left without their CDR partition:
  CDRs of the month sit in cdrs_default (`db partitions --move-default`), or the store was busy
Gauges: radiusd_snapshot_version (the oldest any worker answers from), radiusd_spool_depth (sum
over workers), radiusd_store_up (1 only if every worker reaches the store),
radiusd_accounting_lag_seconds (age of the oldest accounting record not yet acknowledged, the
worst worker), radiusd_accounting_queue_depth and radiusd_reservation_queue_depth (records /
Access-Requests waiting for the store, sum over workers). A worker whose lag (or a stuck
admission batch) passes `degraded_after` reports `/health` 503 with status "degraded".

One endpoint per server, whatever the worker count:
- one process (`--workers 1`): the process serves its own counters (`MetricsServer(metrics, ...)`);
- several workers: the supervisor opens a private directory and exports its path as
  PROMETHEUS_MULTIPROC_DIR before it starts the workers. prometheus_client in each worker then
  keeps its counters and gauges in memory-mapped files there (an increment is visible to the next
  scrape at once), and the supervisor alone serves `metrics_port`: `ServerMetrics` sums the
  workers' files (counters of workers that died and were restarted included), drops a dead
  worker's gauges (mark_process_dead) and removes the directory at exit. Each worker writes its
  health to `health-<worker>.json` there every REPORT_SECONDS (`WorkerReport`); `/health` is 200
  only when every worker reported lately and is healthy, else 503 naming the worker and why.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import multiprocess

prometheus_client.disable_created_metrics()   # no *_created series: counters only

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"   # read by prometheus_client when a worker imports it
SUPERVISED_ENV = "RADIUSD_METRICS_DIR"       # ours: this process is a worker of a supervisor
REPORT_SECONDS = 1.0      # a worker's health and gauges, written this often
STALE_SECONDS = 5.0       # a worker silent this long is unhealthy
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

# name -> (help, label names)
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "radiusd_packets_received_total": ("RADIUS datagrams received", ("port",)),
    "radiusd_packets_dropped_total": ("RADIUS datagrams dropped without an answer", ("port", "reason")),
    "radiusd_nas_over_budget_total": ("Datagrams refused because their NAS sent more than its fair share",
                                      ("port", "nas", "limit")),
    "radiusd_duplicates_total": ("Retransmissions seen by the RFC 5080 duplicate cache", ("port", "kind")),
    "radiusd_auth_decisions_total": ("Access-Request decisions", ("outcome", "reason")),
    "radiusd_status_server_total": ("Status-Server requests answered", ("port",)),
    "radiusd_accounting_total": ("Accounting-Requests recorded and answered", ("status",)),
    "radiusd_store_errors_total": ("Store operations that failed", ("operation",)),
    "radiusd_snapshot_reloads_total": ("Admin data snapshots loaded", ()),
    "radiusd_cdr_anomalies_total": ("CDRs written with an anomaly corrected, by kind", ("kind",)),
    "radiusd_usage_drift_total": ("Usage counters found off from the open legs and recomputed by the sweeper",
                                  ("kind",)),
    "radiusd_cdr_partitions_skipped_total": ("Months a sweep left without their CDR partition (CDRs of the "
                                             "month in cdrs_default, or the store busy)", ()),
}
# name -> (help, how several workers' values combine)
GAUGES: dict[str, tuple[str, str]] = {
    "radiusd_snapshot_version": ("Admin data snapshot version answered from (oldest over workers)", "livemin"),
    "radiusd_store_up": ("1 when every worker reaches the store, else 0", "livemin"),
    "radiusd_spool_depth": ("Accounting records waiting in the spools (all workers)", "livesum"),
    "radiusd_accounting_lag_seconds": ("Age of the oldest accounting record not yet acknowledged (worst worker)",
                                       "livemax"),
    "radiusd_accounting_queue_depth": ("Accounting records waiting for the writer (all workers)", "livesum"),
    "radiusd_reservation_queue_depth": ("Access-Requests waiting for the reservation batcher (all workers)",
                                        "livesum"),
    "radiusd_fairness_ceiling": ("Datagrams/s per NAS while NAS contend and the worker is busy, 0 = none "
                                 "(highest over workers; settings [fairness] adaptive)", "livemax"),
    "radiusd_nas_message_authenticator_required": (
        "NAS whose Access-Requests must carry Message-Authenticator now (policy yes, or auto learned)", "livemax"),
    "radiusd_nas_message_authenticator_learned": (
        "NAS under policy auto that have sent Message-Authenticator", "livemax"),
}


class Metrics:
    """One process's counters and gauges. `inc` is cheap (a cached child, one lock); a gauge is a
    function read when the gauges are refreshed (each scrape, or each worker report)."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._children: dict[tuple, object] = {}
        self._gauges: dict[str, Gauge] = {}
        self._reads: dict[str, Callable[[], float]] = {}
        for name, (help_, labels) in COUNTERS.items():
            self._counter(name, labels, help_)

    def _counter(self, name: str, labels, help_: str | None = None) -> Counter:
        with self._lock:
            found = self._counters.get(name)
            if found is None:   # a counter not listed above: declared by its first use
                found = self._counters[name] = Counter(name, help_ or name, tuple(labels), registry=self.registry)
            return found

    def _child(self, name: str, labels: dict):
        key = (name, *labels.items())   # a call site names its labels in one order: no sort needed
        child = self._children.get(key)
        if child is None:
            counter = self._counters.get(name) or self._counter(name, sorted(labels))
            child = counter.labels(**{k: str(v) for k, v in labels.items()}) if labels else counter
            self._children[key] = child
        return child

    def inc(self, name: str, amount: int = 1, **labels) -> None:
        self._child(name, labels).inc(amount)

    def get(self, name: str, **labels) -> int:
        value = self.registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
        return int(value or 0)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        help_, mode = GAUGES.get(name, (name, "livemax"))
        with self._lock:
            if name not in self._gauges:
                self._gauges[name] = Gauge(name, help_, registry=self.registry, multiprocess_mode=mode)
            self._reads[name] = read

    def refresh(self) -> None:
        """Set every gauge from its function (one that fails keeps its last value)."""
        for name, read in list(self._reads.items()):
            try:
                self._gauges[name].set(float(read()))
            except Exception:   # e.g. the writer not started yet: the next refresh tries again
                continue

    def render(self) -> str:
        self.refresh()
        return generate_latest(self.registry).decode()


class ServerMetrics:
    """The supervisor's view of its workers: their counters summed, their health combined.

    `live_pids()` -> {worker index: pid of the process running it now}."""

    def __init__(self, directory: str, live_pids: Callable[[], dict[int, int]]):
        self.directory = directory
        self.live_pids = live_pids

    @classmethod
    def open(cls, live_pids: Callable[[], dict[int, int]]) -> "ServerMetrics":
        """A fresh directory, exported for the workers to come (set before they start)."""
        directory = tempfile.mkdtemp(prefix="radiusd-metrics-")
        os.environ[MULTIPROC_ENV] = os.environ[SUPERVISED_ENV] = directory
        return cls(directory, live_pids)

    def render(self) -> str:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry).decode()

    def worker_exited(self, pid: int) -> None:
        """A worker process ended: its gauges no longer count (its counters still do)."""
        multiprocess.mark_process_dead(pid, self.directory)

    def health(self) -> tuple[bool, dict]:
        now = time.time()
        workers, problems = [], []
        for index, pid in sorted(self.live_pids().items()):
            report = _read_json(Path(self.directory) / f"health-{index}.json")
            if report is None or report.get("pid") != pid:
                problems.append(f"worker {index}: starting")
                workers.append({"worker": index, "pid": pid, "status": "starting"})
                continue
            age = now - report["at"]
            details = {"worker": index, "pid": pid, **report["details"]}
            if age > STALE_SECONDS:
                problems.append(f"worker {index}: no report for {age:.0f} s")
                details["status"] = "silent"
            elif not report["ok"] and details.get("status") == "degraded":
                problems.append(f"worker {index}: degraded ({details.get('reason', 'store behind')})")
            elif not report["ok"]:
                problems.append(f"worker {index}: store {details.get('store', 'unavailable')}")
                details["status"] = "unavailable"
            else:
                details["status"] = "ok"
            workers.append(details)
        reported = [w for w in workers if "store" in w]
        summary = {
            "store": "up" if reported and all(w["store"] == "up" for w in reported) else "unreachable",
            "snapshot_version": min((w["snapshot_version"] for w in reported
                                     if w.get("snapshot_version") is not None), default=None),
            "spool_depth": sum(max(0, w.get("spool_depth") or 0) for w in reported),
            "nas": max((w.get("nas") or 0 for w in reported), default=0),
            "workers": workers,
        }
        if problems:
            summary["reason"] = "; ".join(problems)
            if all(w.get("status") in ("ok", "degraded") for w in workers):
                summary["status"] = "degraded"   # answering, but the store is behind
        return not problems and bool(workers), summary

    def close(self) -> None:
        for name in (MULTIPROC_ENV, SUPERVISED_ENV):
            if os.environ.get(name) == self.directory:
                del os.environ[name]
        shutil.rmtree(self.directory, ignore_errors=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def supervised() -> bool:
    """True in a worker whose supervisor serves the endpoint (it exported the directory)."""
    return bool(os.environ.get(SUPERVISED_ENV))


class WorkerReport:
    """In a worker under a supervisor: every REPORT_SECONDS refresh the gauges (into the shared
    files) and write `health-<worker>.json` (atomically: a new file renamed over the old)."""

    port = None   # serves nothing itself

    def __init__(self, metrics: Metrics, health: Callable[[], tuple[bool, dict]], worker: int):
        self.metrics = metrics
        self.health = health
        self.worker = worker
        self.path = Path(os.environ[SUPERVISED_ENV]) / f"health-{worker}.json"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-report", daemon=True)

    def start(self) -> "WorkerReport":
        self.report()
        self._thread.start()
        return self

    def report(self) -> None:
        self.metrics.refresh()
        try:
            ok, details = self.health()
        except Exception as exc:   # a broken health check is itself unhealthy
            ok, details = False, {"error": exc.__class__.__name__}
        body = json.dumps({"pid": os.getpid(), "at": time.time(), "ok": bool(ok), "details": details}, default=str)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(body)
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(REPORT_SECONDS):
            try:
                self.report()
            except OSError:   # the supervisor removed the directory: it is stopping
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class MetricsServer:
    """`/metrics` and `/health` over HTTP in a daemon thread.

    `source` has `render() -> str` (a Metrics, or the supervisor's ServerMetrics);
    `health() -> (ok, details)`: 200 with status ok, or 503 with status unavailable."""

    def __init__(self, source, health: Callable[[], tuple[bool, dict]], bind: str, port: int):
        source_ref, health_ref = source, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE, source_ref.render())
                elif path == "/health":
                    try:
                        ok, details = health_ref()
                    except Exception as exc:  # a broken health check is itself unhealthy
                        ok, details = False, {"error": exc.__class__.__name__}
                    details = {"status": "ok" if ok else "unavailable", **details}
                    self._send(200 if ok else 503, "application/json", json.dumps(details, default=str) + "\n")
                else:
                    self._send(404, "text/plain", "not found\n")

            def _send(self, code: int, ctype: str, body: str):
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # scrapes are not worth a log line
                pass

        family_server = ThreadingHTTPServer
        if ":" in bind:
            import socket

            class V6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6
            family_server = V6Server
        self.httpd = family_server((bind, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
