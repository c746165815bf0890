"""Store URLs as operators write them: libpq's multi-host form for a primary + standby, passwords hidden."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from radiusd.config import PROJECT_ROOT
from radiusd.db import make_engine, normalise_url, safe_url


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:p@db1,db2/radiusd?target_session_attrs=read-write",
     "postgresql+psycopg2://u:p@/radiusd?host=db1,db2&target_session_attrs=read-write"),
    ("postgres://u:p@db1:5433,[2001:db8::7]:5432/radiusd",
     "postgresql+psycopg2://u:p@/radiusd?host=db1,2001:db8::7&port=5433,5432"),
    ("postgresql://u:p@db1,db2:6432/radiusd", "postgresql+psycopg2://u:p@/radiusd?host=db1,db2&port=,6432"),
    # already in a form SQLAlchemy reads: unchanged apart from the driver
    ("postgresql://u:p@/radiusd?host=db1:5432&host=db2:5432", "postgresql+psycopg2://u:p@/radiusd?host=db1:5432&host=db2:5432"),
    ("postgresql://u:p@db1/radiusd", "postgresql+psycopg2://u:p@db1/radiusd"),
    ("sqlite:///radiusd.sqlite3", "sqlite:///radiusd.sqlite3"),
])
def test_urls_become_what_sqlalchemy_reads(url, expected):
    assert normalise_url(url) == expected
    make_url(normalise_url(url))  # and SQLAlchemy reads it


def test_hosts_and_ports_reach_libpq_in_order():
    engine = make_engine("postgresql://u:p@db1:5433,db2/radiusd?target_session_attrs=read-write")
    _, opts = engine.dialect.create_connect_args(engine.url)
    assert (opts["host"], opts["port"], opts["target_session_attrs"]) == ("db1,db2", "5433,", "read-write")
    engine.dispose()


@pytest.mark.parametrize("url, shown", [
    ("postgresql://radiusd:s3cret@db1,db2/radiusd?target_session_attrs=read-write",
     "postgresql://radiusd:***@db1,db2/radiusd?target_session_attrs=read-write"),
    ("postgresql://radiusd@/radiusd?host=db1&host=db2&password=s3cret", "postgresql://radiusd@/radiusd?host=db1&host=db2&password=***"),
    ("postgresql://radiusd:s3cret@db1:nope/radiusd", "(unparsable URL)"),
    ("sqlite:////var/lib/radiusd/store.sqlite3", "sqlite:////var/lib/radiusd/store.sqlite3"),
])
def test_urls_are_shown_without_password(url, shown):
    assert safe_url(url) == shown


def _two_hosts_first_dead(pg_url: str, libpq_form: bool) -> str:
    """pg_url with a dead host (127.0.0.1:1, nothing listens there) in front of the real one."""
    url = make_url(pg_url)
    real = f"{url.host}:{url.port or 5432}"
    auth = f"{url.username}:{url.password}"
    if libpq_form:
        return f"postgresql://{auth}@127.0.0.1:1,{real}/{url.database}?target_session_attrs=read-write"
    return f"postgresql://{auth}@/{url.database}?host=127.0.0.1:1&host={real}&target_session_attrs=read-write"


@pytest.mark.parametrize("libpq_form", [True, False], ids=["libpq-multi-host", "host-parameters"])
def test_two_host_url_with_the_first_host_down_connects_to_the_second(pg_url, libpq_form):
    engine = make_engine(_two_hosts_first_dead(pg_url, libpq_form))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_database()").scalar() == make_url(pg_url).database
            assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "off"
    finally:
        engine.dispose()


def test_cli_takes_the_libpq_multi_host_url_and_never_prints_its_password(pg_url):
    url = _two_hosts_first_dead(pg_url, libpq_form=True)
    env = dict(os.environ, DATABASE_URL=url)
    init = subprocess.run([sys.executable, "-m", "radiusd", "db", "init", "--json"], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert init.returncode == 0, init.stderr
    shown = json.loads(init.stdout)["database"]
    assert shown.startswith(f"postgresql://{make_url(pg_url).username}:***@127.0.0.1:1,")


def test_server_runs_on_a_two_host_url_with_the_first_host_down(pg_url, tmp_path):
    from radius_server import ServerProcess, seeded_store

    url = _two_hosts_first_dead(pg_url, libpq_form=True)
    seeded_store(url)
    srv = ServerProcess(url, tmp_path).wait_ready()
    try:
        status, health = srv.health()
        assert status == 200 and health["store"] == "up" and health["nas"] >= 1
    finally:
        assert srv.stop() == 0
