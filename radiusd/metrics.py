"""Counters and a tiny HTTP endpoint: `/metrics` (Prometheus text format) and `/health`.

Counters (all `_total`, labels in braces):
- radiusd_packets_received_total{port}                 every datagram, port = auth | acct
- radiusd_packets_dropped_total{port,reason}           silently dropped, by reason: unknown_nas,
  inactive_nas, malformed, unsupported_code, bad_authenticator, bad_message_authenticator,
  missing_message_authenticator, proxy_state_without_message_authenticator, duplicate_in_progress, missing_status_type,
  unsupported_status_type, missing_session_id, not_recorded, shutting_down, overloaded, internal_error
- radiusd_duplicates_total{port,kind}                  kind = replayed | in_progress | conflict
- radiusd_auth_decisions_total{outcome,reason}         outcome = accept | reject; reason = the
  RejectReason name in lower case (accept: "none")
- radiusd_status_server_total{port}                    Status-Server answered
- radiusd_accounting_total{status}                     Accounting-Requests answered, by status
- radiusd_store_errors_total{operation}                reserve_call / snapshot / accounting failures
- radiusd_snapshot_reloads_total                       snapshots swapped in
Gauges: radiusd_snapshot_version, radiusd_spool_depth, radiusd_store_up (1/0).

With several workers each worker serves its own endpoint on metrics_port + worker index
(worker 0 on metrics_port); a Prometheus job lists all of them. Keeping counters per process
avoids shared memory between workers.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

_HELP = {
    "radiusd_packets_received_total": "RADIUS datagrams received",
    "radiusd_packets_dropped_total": "RADIUS datagrams dropped without an answer",
    "radiusd_duplicates_total": "Retransmissions seen by the RFC 5080 duplicate cache",
    "radiusd_auth_decisions_total": "Access-Request decisions",
    "radiusd_status_server_total": "Status-Server requests answered",
    "radiusd_accounting_total": "Accounting-Requests recorded and answered",
    "radiusd_store_errors_total": "Store operations that failed",
    "radiusd_snapshot_reloads_total": "Admin data snapshots loaded",
}


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters keyed by (name, sorted labels) plus gauges read at scrape time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, amount: int = 1, **labels) -> None:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + amount

    def get(self, name: str, **labels) -> int:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            return self._counters.get(key, 0)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def render(self) -> str:
        with self._lock:
            counters = sorted(self._counters.items())
        lines: list[str] = []
        seen: set[str] = set()
        for (name, labels), value in counters:
            if name not in seen:
                seen.add(name)
                lines.append(f"# HELP {name} {_HELP.get(name, name)}")
                lines.append(f"# TYPE {name} counter")
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
        for name, read in sorted(self._gauges.items()):
            try:
                value = float(read())
            except Exception:
                continue
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"


class MetricsServer:
    """`/metrics` and `/health` over HTTP in a daemon thread. health() -> (ok, details)."""

    def __init__(self, metrics: Metrics, health: Callable[[], tuple[bool, dict]], bind: str, port: int):
        metrics_ref, health_ref = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", metrics_ref.render())
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
