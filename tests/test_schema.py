"""schema/postgresql.sql and the SQLAlchemy models are one source of truth: they must not drift."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.dialects import postgresql

from radiusd.models import Base
from radiusd.store.ddl import postgresql_ddl

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schema" / "postgresql.sql"


def test_schema_file_is_generated_from_models():
    assert SCHEMA_FILE.read_text() == postgresql_ddl(), (
        "schema/postgresql.sql is out of date: run `radiusd db schema > schema/postgresql.sql`"
    )


def _psql(url: str, *args: str) -> subprocess.CompletedProcess:
    psql = shutil.which("psql")
    if not psql:
        pytest.fail("psql (PostgreSQL client) is required to load schema/ into PostgreSQL")
    libpq_url = url.replace("postgresql+psycopg2://", "postgresql://")
    return subprocess.run([psql, libpq_url, "-v", "ON_ERROR_STOP=1", "-q", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


def test_psql_loaded_schema_matches_models(pg_url):
    loaded = _psql(pg_url, "-f", str(SCHEMA_FILE))
    assert loaded.returncode == 0, loaded.stderr
    engine = create_engine(pg_url)
    try:
        db = inspect(engine)
        with engine.connect() as conn:  # partitions are tables too; the schema has cdrs' DEFAULT one
            partitions = set(conn.exec_driver_sql("SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r'").scalars())
        assert partitions == {"cdrs_default"}
        assert set(db.get_table_names()) - partitions == set(Base.metadata.tables)
        dialect = postgresql.dialect()
        for name, table in Base.metadata.tables.items():
            columns = {c["name"]: c for c in db.get_columns(name)}
            assert set(columns) == set(table.columns.keys()), name
            for column in table.columns:
                found = columns[column.name]
                expected_type = column.type.compile(dialect=dialect).replace("SERIAL", "INTEGER")
                assert found["type"].compile(dialect=dialect) in (expected_type, expected_type.replace("BIGINTEGER", "BIGINT")), (
                    f"{name}.{column.name}: {found['type']} vs {expected_type}")
                assert found["nullable"] == column.nullable, f"{name}.{column.name} nullability"
            indexes = {i["name"] for i in db.get_indexes(name)}
            assert indexes >= {i.name for i in table.indexes}, name
            uniques = {u["name"] for u in db.get_unique_constraints(name)}
            expected = {c.name for c in table.constraints if c.__class__.__name__ == "UniqueConstraint"}
            assert uniques == expected, name
    finally:
        engine.dispose()


def _radiusd(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radiusd", *args, "--database-url", url],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)


def test_psql_schema_then_demo_seed_then_search_by_ip(pg_url):
    """The path an operator takes: psql -f schema, seed load, find the account holding an address."""
    assert _psql(pg_url, "-f", str(SCHEMA_FILE)).returncode == 0
    seeded = _radiusd(pg_url, "seed", "load", str(ROOT / "schema" / "seeds" / "demo.sql"))
    assert seeded.returncode == 0, seeded.stderr
    found = _radiusd(pg_url, "account", "search", "--ip", "10.1.2.3", "--json")
    assert found.returncode == 0, found.stderr
    names = {a["name"] for a in json.loads(found.stdout)}
    assert names == {"acme-gw", "acme-gw-0099"}
