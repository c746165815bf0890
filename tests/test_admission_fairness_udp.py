"""Fairness where Access-Requests wait for the store, over real UDP: a flooding NAS fills only its
share of the admission queue (its excess answered code 8 at once, counted `nas_share`), while
another NAS's requests keep getting in and are all accepted.

The admission queue is made small (`reservation_queue = 64`: a NAS alone may hold 32, each of
two 21) and the loop's per-NAS limits are lifted so that the flooder's requests reach the store's
queue at all. The probe sends 20/s: only a store stalled for a second would leave 21 of its
requests waiting at once.
The flooder is `kamailio-lab` (127.0.0.2, accepted Access-Requests that each reserve in the
store), the probe `radiusd bench auth` from `localhost` (127.0.0.1). No speed is asserted."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from nas_flood import Flood
from radius_server import ServerProcess, seeded_store

SHARE = 'radiusd_backpressure_total{queue="reservation",reason="nas_share"}'


@pytest.fixture()
def server(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp_path, toml="[backpressure]\nreservation_queue = 64\n"
                                            "[fairness]\nrate = 0\nin_flight = 100000\n").wait_ready()
    yield srv
    assert srv.stop() == 0


def test_a_flooding_nas_fills_only_its_share_of_the_admission_queue(server):
    flood = Flood(server.auth_port, source="127.0.0.2", seconds=10.0, procs=2, sockets=4, rate=20000)
    try:
        deadline = time.monotonic() + 15
        while server.counter(SHARE) == 0:
            assert time.monotonic() < deadline, "the flood never filled its share of the admission queue"
            time.sleep(0.05)
        probe = subprocess.run(
            [sys.executable, "-m", "radiusd", "bench", "auth", "--auth-port", str(server.auth_port),
             "--acct-port", str(server.acct_port), "--rate", "20", "--duration", "5", "--timeout", "2",
             "--json", "--quiet"],
            capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0, probe.stderr
        flood.stop()
    finally:
        flood.kill()
    result = json.loads(probe.stdout)["by_kind"]["auth"]
    print(f"probe {result}; nas_share refusals {server.counter(SHARE)}")
    assert result["sent"] >= 90
    assert result["responses"] / result["sent"] >= 0.99, result
    # none of the probe's requests was refused: the flooder's share is full, the probe's is not
    assert result["accepts"] == result["responses"], result
    assert server.counter(SHARE) > 0
