"""docker-compose.yml: no Docker engine runs on CI machines, so the file is checked as data and
its seed step is run here, by the same shell, against a store of our own."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import yaml

from radiusd.config import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_compose_network_has_a_fixed_subnet_and_the_seed_adds_a_nas_for_it():
    [ipam] = COMPOSE["networks"]["default"]["ipam"]["config"]
    subnet = ipaddress.ip_network(ipam["subnet"])
    assert ipaddress.ip_address(ipam["gateway"]) in subnet   # host traffic arrives from the gateway
    assert COMPOSE["services"]["seed"]["environment"]["COMPOSE_SUBNET"] == ipam["subnet"]


def test_compose_publishes_one_metrics_port():
    ports = COMPOSE["services"]["radiusd"]["ports"]
    assert [p for p in ports if not p.endswith("/udp")] == ["9812:9812"]


def _run_seed_step(tmp_path, env) -> subprocess.CompletedProcess:
    seed = COMPOSE["services"]["seed"]
    assert seed["entrypoint"] == ["sh", "-c"]
    script = seed["command"][0].replace("$$", "$")   # compose's escape for a literal $
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


def test_seed_step_loads_the_demo_and_the_gateway_nas_once(tmp_path, store_url):
    """On an empty store (PostgreSQL in compose gets the schema from its init script; here the
    step's own `db init` creates it), on both stores."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "radiusd"   # the image's `radiusd` entry point, from this checkout
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m radiusd "$@"\n')
    shim.chmod(0o755)
    url = store_url
    env = {**os.environ, **COMPOSE["services"]["seed"]["environment"], "DATABASE_URL": url,
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(PROJECT_ROOT), "RADIUSD_CONFIG": ""}
    for _ in range(2):   # `docker compose up` twice: the second run changes nothing
        step = _run_seed_step(tmp_path, env)
        assert step.returncode == 0, step.stdout + step.stderr
    shown = subprocess.run([str(shim), "nas", "list", "--json"], capture_output=True, text=True, env=env, timeout=120)
    nas = {n["name"]: n for n in json.loads(shown.stdout)}
    assert {"localhost", "localhost6", "docker-host"} <= set(nas)
    gateway = COMPOSE["networks"]["default"]["ipam"]["config"][0]["gateway"]
    assert ipaddress.ip_address(gateway) in ipaddress.ip_network(nas["docker-host"]["address"])
    if url.startswith("postgresql"):   # CDR partitions exist before radiusd takes its first packet
        shown = subprocess.run([str(shim), "db", "partitions", "--months-ahead", "1", "--json"],
                               capture_output=True, text=True, env=env, timeout=120)
        assert {p["status"] for p in json.loads(shown.stdout)["partitions"]} == {"present"}, shown.stdout
