"""Log lines: one JSON object per line, also with several processes writing to one stderr file."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from radius_server import free_port, seeded_store
from radiusd.config import PROJECT_ROOT
from radiusd.logging_setup import configure, get_logger


def _json_lines(path: Path) -> list[dict]:
    """Every line of the file as JSON (a joined or cut line fails the test, naming the line)."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"line {number} is not one JSON object: {line[:200]!r}") from None
    return records


def _log_long_lines(path: str, worker: int) -> None:
    with open(path, "a") as stream:  # like a shell's 2>>file: the processes share the file
        os.dup2(stream.fileno(), 2)
    configure("info", worker=worker)
    log = get_logger()
    for i in range(1500):
        # lengths up to 20 kB: longer than Python's 8 kB buffers, like a traceback or a big field
        log.info("test.line", i=i, pad="x" * ((i * 7919) % 20000))


def test_two_processes_logging_long_lines_to_one_file_never_join_them(tmp_path):
    path = tmp_path / "stderr.log"
    path.touch()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_log_long_lines, args=(str(path), n)) for n in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    records = _json_lines(path)
    assert sorted((r["worker"], r["i"]) for r in records) == [(w, i) for w in range(2) for i in range(1500)]


def test_standard_library_records_are_json_lines_too(tmp_path):
    path = tmp_path / "stderr.log"
    code = ("import logging, warnings; from radiusd.logging_setup import configure; configure('info', worker=3); "
            "logging.getLogger('asyncio').error('Task was destroyed but it is pending!'); "
            "warnings.warn('going away', DeprecationWarning)")
    with open(path, "w") as err:
        subprocess.run([sys.executable, "-W", "always", "-c", code], stderr=err, cwd=PROJECT_ROOT, timeout=60,
                       check=True)
    task, warning = _json_lines(path)
    assert task["event"] == "Task was destroyed but it is pending!"
    assert (task["logger"], task["level"], task["worker"]) == ("asyncio", "error", 3)
    assert warning["logger"] == "py.warnings" and warning["event"].endswith("DeprecationWarning: going away")


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_under_load_write_only_whole_json_lines(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    auth, acct = free_port(2)
    config = tmp_path / "radiusd.toml"
    config.write_text(f"[spool]\npath = \"{tmp_path / 'spool'}\"\n")
    env = dict(os.environ, DATABASE_URL=url, RADIUSD_CONFIG=str(config))
    log_path = tmp_path / "stderr.log"
    with open(log_path, "w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "radiusd", "serve", "--workers", "2", "--bind", "127.0.0.1",
             "--auth-port", str(auth), "--acct-port", str(acct), "--metrics-port", "0"],
            stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tmp_path)
    try:
        _wait_for(lambda: log_path.read_text().count('"server.ready"') >= 2 or server.poll() is not None,
                  60, "two workers ready")
        assert server.poll() is None, log_path.read_text()[-3000:]
        bench = subprocess.run(
            [sys.executable, "-m", "radiusd", "bench", "calls", "--server", "127.0.0.1", "--auth-port", str(auth),
             "--acct-port", str(acct), "--duration", "4", "--rate", "150", "--json", "--quiet"],
            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, env=env)
        assert bench.returncode == 0, bench.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    records = _json_lines(log_path)
    per_worker = {}
    for record in records:
        if not record.get("event", "").startswith(("server.", "supervisor.")):
            per_worker[record.get("worker")] = per_worker.get(record.get("worker"), 0) + 1
    assert sum(per_worker.values()) >= 300, per_worker     # the load was logged...
    assert per_worker.get(0) and per_worker.get(1), per_worker   # ...by both workers at once


def test_the_per_request_line_is_the_same_json_as_any_other_line_and_obeys_the_level():
    import io
    from decimal import Decimal

    from radiusd.logging_setup import log_line

    try:
        stream = io.StringIO()
        configure("info", stream=stream, worker=2)
        fields = {"outcome": "accept", "nas": "gw", "max_cost": Decimal("1.50"), "calling": None}
        get_logger().info("auth.decision", **fields)
        log_line("info", "auth.decision", dict(fields))
        log_line("debug", "auth.decision", dict(fields))   # below the configured level: not written
        structlog_line, fast_line = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert list(fast_line) == list(structlog_line)   # same keys in the same order
        assert {k: v for k, v in fast_line.items() if k != "timestamp"} == \
            {k: v for k, v in structlog_line.items() if k != "timestamp"}
        assert fast_line["max_cost"] == "1.50" and fast_line["worker"] == 2 and fast_line["level"] == "info"
        assert fast_line["timestamp"].endswith("Z") and fast_line["timestamp"][:2] == "20"

        stream = io.StringIO()
        configure("warning", stream=stream)
        log_line("info", "accounting.recorded", {"status": "start"})
        log_line("warning", "accounting.attribute", {"detail": "unreadable Event-Timestamp"})
        (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
        assert (line["event"], line["level"]) == ("accounting.attribute", "warning")
    finally:
        configure("info")   # this process's lines go to stderr again
