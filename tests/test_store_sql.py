"""The SQL layer: statements by dialect and name, PREPARE once per connection, lists as arrays."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from radiusd.db import create_schema, make_engine
from radiusd.store import sql


def test_each_dialect_has_the_same_statement_names_per_area_where_both_run_it():
    for area in ("admission", "accounting"):
        assert sql.statements("postgresql", area) and sql.statements("sqlite", area)
    assert sql.statement("postgresql", "admission", "upsert") is sql.statements("postgresql", "admission")["upsert"]
    with pytest.raises(RuntimeError, match="unsupported store dialect"):
        sql.statements("mysql", "admission")


def test_a_statement_is_found_by_engine_or_connection_too():
    engine = make_engine("sqlite://")
    with engine.connect() as conn:
        assert sql.statements(conn, "admission") is sql.statements("sqlite", "admission")
    assert sql.statements(engine, "admission") is sql.statements("sqlite", "admission")


def test_prepared_statements_are_made_once_per_connection_and_take_any_text(pg_url):
    engine = make_engine(pg_url)
    create_schema(engine)
    probe = sql.Prepared("radiusd_test_probe", ("varchar[]", "numeric[]", "timestamptz[]"),
                         "SELECT * FROM unnest($1, $2, $3)")
    fairy = engine.raw_connection()
    try:
        cur = fairy.driver_connection.cursor()
        cur.execute(probe.prepare)
        awkward = ["it's", 'say "hi"', "back\\slash", "{braces,comma}", "NULL", None, "ünïcødé"]
        when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
        cur.execute(probe.execute, probe.params(awkward, [Decimal("1.5")] * len(awkward), [when] * len(awkward)))
        assert [row[0] for row in cur.fetchall()] == awkward
        cur.execute(probe.execute, probe.params([], [], []))     # empty arrays keep their type
        assert cur.fetchall() == []
        cur.execute(probe.execute, probe.params([None], [None], [None]))   # so do all-NULL ones
        assert cur.fetchall() == [(None, None, None)]
        # the area's statements: PREPAREd on the first call, remembered in the pool connection
        sql.prepare(fairy, cur, "admission")
        prepared = sum(isinstance(st, sql.Prepared) for st in sql.statements("postgresql", "admission").values())
        assert prepared == 4   # lock, expire, usage, upsert
        cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'radiusd_admit_%'")
        assert cur.fetchone()[0] == prepared
        sql.prepare(fairy, cur, "admission")   # a second PREPARE of the same name would fail
        sql.forget_prepared(fairy)
        cur.execute("DEALLOCATE ALL")
        sql.prepare(fairy, cur, "admission")
        cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'radiusd_admit_%'")
        assert cur.fetchone()[0] == prepared
        cur.close()
    finally:
        fairy.close()
        engine.dispose()


def test_column_arrays_follow_the_models_types(pg_url):
    """Times go as ISO text and come back as the same instant; money exact."""
    from radiusd.models import ActiveCall

    statement = sql.Prepared.from_columns("radiusd_test_cols", ActiveCall.__table__,
                                          ("leg_key", "max_cost", "created_at"), "SELECT * FROM {unnest}")
    rows = [{"leg_key": "k1", "max_cost": Decimal("0.123456"),
             "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))}]
    engine = make_engine(pg_url)
    fairy = engine.raw_connection()
    try:
        cur = fairy.driver_connection.cursor()
        cur.execute(statement.prepare)
        cur.execute(statement.execute, statement.column_arrays(rows))
        [(key, cost, created)] = cur.fetchall()
        assert (key, cost, created) == ("k1", Decimal("0.123456"), rows[0]["created_at"])
        cur.close()
    finally:
        fairy.close()
        engine.dispose()
