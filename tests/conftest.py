"""Shared fixtures: real stores (SQLite file, throwaway PostgreSQL database) and real tools.

PostgreSQL comes from RADIUSD_TEST_PG_URL (a role allowed to CREATE DATABASE; `.ci/run` sets it).
Each test that asks for PostgreSQL gets a fresh database that is dropped afterwards.
With CI=true a missing PostgreSQL or radclient fails the test instead of skipping it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from radiusd.db import create_schema, make_engine, make_sessionmaker, normalise_url

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("RADIUSD_TEST_PG_URL")
if PG_ADMIN_URL:
    PG_ADMIN_URL = normalise_url(PG_ADMIN_URL)
# One secrets key file for the whole run (the servers the tests start inherit it), never ./radiusd.key
# in the checkout; tests of the key file itself set their own.
os.environ.setdefault("RADIUSD_KEY_FILE", os.path.join(tempfile.mkdtemp(prefix="radiusd-test-key-"), "radiusd.key"))


def _unavailable(what: str):
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is not available")
    pytest.skip(f"{what} not available")


@pytest.fixture
def pg_url():
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    if not PG_ADMIN_URL:
        _unavailable("PostgreSQL (set RADIUSD_TEST_PG_URL)")
    name = f"radiusd_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server down, bad credentials
        admin.dispose()
        _unavailable(f"PostgreSQL at RADIUSD_TEST_PG_URL ({exc.__class__.__name__})")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _engine_with_schema(url: str):
    engine = make_engine(url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_url):
    """An engine on a new PostgreSQL database with the schema, for tests that need PostgreSQL itself."""
    yield from _engine_with_schema(pg_url)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'radiusd.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Run the test once on an SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'radiusd.sqlite3'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(store_url):
    yield from _engine_with_schema(store_url)


@pytest.fixture
def sessions(engine):
    return make_sessionmaker(engine)


@pytest.fixture
def radclient():
    path = shutil.which("radclient")
    if not path:
        _unavailable("radclient (Debian package freeradius-utils)")
    return path
