"""The chaos suite (benchmarks/chaos.py) runs as a user would run it: fuzz and kill -9, small.

The speed and memory targets belong to the benchmark run; this test holds what a user would
notice: the suite completes and prints its table, the server survives the fuzz, and nothing
acknowledged is lost or stored twice across kill -9 and the spool replay.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conftest import PG_ADMIN_URL, _unavailable

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg_admin_url():
    if not PG_ADMIN_URL:
        _unavailable("PostgreSQL (set RADIUSD_TEST_PG_URL)")
    return PG_ADMIN_URL


def test_quick_chaos_fuzz_and_kill_complete_and_lose_nothing_acknowledged(pg_admin_url, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--quick", "--only", "fuzz,kill",
         "--pg-admin-url", pg_admin_url, "--results", str(tmp_path)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    table = proc.stdout.splitlines()
    assert "| scenario | figures | target (issue 11) | verdict |" in table
    assert any(line.startswith("| fuzz | ") for line in table), proc.stdout
    assert any(line.startswith("| kill -9 under load | ") for line in table), proc.stdout
    assert "Traceback" not in proc.stderr

    [results] = tmp_path.glob("chaos-*.json")
    run = json.loads(results.read_text())
    scenarios = run["scenarios"]
    fuzz, kill = scenarios["fuzz"], scenarios["kill"]
    assert "error" not in fuzz and "error" not in kill, scenarios
    assert fuzz["server_alive"] and fuzz["packets"] == 20_000
    assert fuzz["answering_again_after_s"] is not None          # answers valid requests after the fuzz
    assert kill["server_alive"] and kill["acknowledged"] > 0
    assert kill["acknowledged_missing"] == 0                     # every acknowledged Stop has its CDR
    assert kill["stored_twice"] == 0                             # and only one

    # the suite drops the database it created
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            left = conn.execute(text("SELECT datname FROM pg_database WHERE datname = :name"),
                                {"name": run["database"]}).all()
    finally:
        admin.dispose()
    assert left == []

