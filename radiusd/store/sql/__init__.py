"""The SQL layer: every SQL text of the store, one set per dialect, and the one mechanism to run it.

As FreeRADIUS keeps its queries in `queries.conf`, radiusd keeps them in
`radiusd/store/sql/<dialect>/<area>.py` (dialect: `postgresql`, `sqlite`; area: `admission`,
`accounting`, `partitions`, ...), each defining `STATEMENTS`: NAME -> statement. Logic modules hold
no SQL text (tests/test_layers.py greps for it): they fetch a statement by name for their
connection's dialect and run it. A statement is one of
- `str`: plain SQL for the driver, psycopg2 `%(name)s`/`%s` placeholders on PostgreSQL;
- `sqlalchemy.text(...)` with typed `bindparams`/`columns` where the models' types must convert
  values (money as integer micro-units and naive UTC times on SQLite);
- `Prepared`: PREPAREd once per PostgreSQL connection, then run by `EXECUTE`. `from_columns`
  statements take one array per column through `unnest`, so their text is the same whatever the
  batch size and PostgreSQL parses and plans them once per connection.

Lock order and time limits
--------------------------
Every transaction that locks rows for accounting, admission or the sweeper takes them in ONE
order: `clients` rows by ascending id, then `active_calls` rows by ascending id (`ORDER BY id`).
Admission and the sweeper's expiry lock their clients before the legs; the usage triggers
(radiusd.store.sql.postgresql.ddl) lock the clients a statement changes at its end (no new lock
once they are held). The one exception: an accounting group (and the stale-call sweep) cannot
know whose its legs are before it locks them, then locks their clients in the first statement of
its write round trip (`lock_clients`). A cycle with admission then needs the same leg in both (a
re-auth of a call whose Start is being written): PostgreSQL aborts one (SQLSTATE 40P01/40001), and
the victim is retried a bounded number of times after a random pause and counted
(`radiusd_store_conflicts_total`), never taken for an outage. Each of those transactions runs
under `lock_timeout`/`statement_timeout` = `store_timeout` (`timeouts`): a lock held longer by
someone else or a stalled server fails it within that time (55P03/57014), and the caller spools
(accounting) or answers code 8 (admission) instead of queueing. `store_timeout` stays above
PostgreSQL's `deadlock_timeout` (1 s): a deadlock must be found and retried before the lock wait
runs out, or it would be taken for a stuck store.
"""
from __future__ import annotations

import contextlib
import importlib
import re
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

DIALECTS = ("postgresql", "sqlite")
_PREPARED_KEY = "radiusd_prepared"   # pool connection .info key: set of areas prepared there
_cache: dict[tuple[str, str], Mapping[str, Any]] = {}
_sqlite_limited: "weakref.WeakSet" = weakref.WeakSet()   # engines with limit_sqlite_waits applied
TIMEOUT_CODES = frozenset({"55P03", "57014"})    # past store_timeout: lock_timeout, statement_timeout
CONFLICT_CODES = frozenset({"40P01", "40001"})   # deadlock, serialization failure: retried


@dataclass(slots=True, eq=False)
class Prepared:
    """A PostgreSQL statement PREPAREd once per connection and run with EXECUTE.

    `body` uses `$1..$n`; `types` are the parameters' SQL types. `execute` is the EXECUTE text for
    psycopg2 with one positional `%s` per parameter, each cast to its type (so an empty list or a
    list of NULLs still has a type); pass the values as a sequence (`params(...)`).
    """

    name: str
    types: Sequence[str]
    body: str
    names: Sequence[str] = ()      # column names, for from_columns statements
    processors: Sequence = ()

    @property
    def prepare(self) -> str:
        return f"PREPARE {self.name} ({', '.join(self.types)}) AS {self.body}"

    @property
    def execute(self) -> str:
        return f"EXECUTE {self.name} ({', '.join('%s::' + t for t in self.types)})"

    def params(self, *values) -> tuple:
        if len(values) != len(self.types):
            raise TypeError(f"{self.name}: {len(self.types)} parameters, {len(values)} given")
        return values

    @classmethod
    def from_columns(cls, name: str, table, names: Sequence[str], body: str, lead: Sequence[str] = ()) -> "Prepared":
        """A statement fed one array per column of `table` (`names`), typed as the models type
        them. `body` contains `{unnest}`, replaced by `unnest($k, ...)` over those arrays; `lead`
        are the SQL types of scalar parameters placed before the arrays ($1.. in `body`)."""
        from sqlalchemy.dialects import postgresql

        dialect = postgresql.dialect()
        cols = [table.c[n] for n in names]
        first = len(lead) + 1
        unnest = "unnest(" + ", ".join(f"${first + i}" for i in range(len(cols))) + ")"
        return cls(name, tuple(lead) + tuple(sql_type(c, dialect) + "[]" for c in cols),
                   body.format(unnest=unnest), names, [_processor(c, dialect) for c in cols])

    def column_arrays(self, rows: Iterable) -> list[list]:
        """One list per column of a from_columns statement for `rows` (dicts or objects), through
        the columns' bind processors; psycopg2 adapts each list to an ARRAY (never hand-escaped)."""
        out: list[list] = [[] for _ in self.names]
        for row in rows:
            get = row.get if isinstance(row, dict) else row.__getattribute__
            for column, name, process in zip(out, self.names, self.processors):
                value = get(name)
                column.append(process(value) if process is not None else value)
        return out

    def __repr__(self) -> str:
        return f"Prepared({self.name!r})"


def _processor(column, dialect):
    """The column's bind processor; times go as ISO-8601 text (cast back by the EXECUTE's typed
    parameter): psycopg2 adapts a str several times faster than an aware datetime."""
    from sqlalchemy import DateTime

    process = column.type.bind_processor(dialect)
    if not isinstance(getattr(column.type, "impl", column.type), DateTime):
        return process
    if process is None:
        return lambda value: None if value is None else value.isoformat()
    return lambda value: None if (value := process(value)) is None else value.isoformat()


def statements(dialect, area: str) -> Mapping[str, Any]:
    """NAME -> statement of `area` for `dialect`: a name, or anything with `.dialect.name` or
    `.name` (Dialect, Engine, Connection). Imported once, cached."""
    name = dialect if isinstance(dialect, str) else getattr(dialect, "dialect", dialect).name
    found = _cache.get((name, area))
    if found is None:
        if name not in DIALECTS:
            raise RuntimeError(f"unsupported store dialect {name}")
        found = _cache[(name, area)] = importlib.import_module(f"{__name__}.{name}.{area}").STATEMENTS
    return found


def statement(dialect, area: str, name: str):
    return statements(dialect, area)[name]


def prepare(pool_connection, cursor, area: str) -> None:
    """PREPARE the area's statements on this DBAPI connection unless done before: remembered in the
    pool connection's `.info` (per DBAPI connection, survives check-in/out, dropped with it)."""
    done = pool_connection.info.setdefault(_PREPARED_KEY, set())
    if area in done:
        return
    cursor.execute("; ".join(st.prepare for st in statements("postgresql", area).values() if isinstance(st, Prepared)))
    done.add(area)


def forget_prepared(pool_connection) -> None:
    """The server lost our prepared statements (SQLSTATE 26000: a pooler moved the session):
    prepare again next time."""
    pool_connection.info.pop(_PREPARED_KEY, None)


def pgcode(exc) -> str | None:
    """The PostgreSQL SQLSTATE under a SQLAlchemy error; None for anything else."""
    return getattr(getattr(exc, "orig", None), "pgcode", None)


def is_timeout(exc) -> bool:
    """The store was too slow: a lock wait past lock_timeout (55P03) or a statement past
    statement_timeout (57014), i.e. past `store_timeout`. The connection itself is fine."""
    return pgcode(exc) in TIMEOUT_CODES


def driver_error(exc, dialect, pool_connection, statement: str | None, *, invalidated: bool):
    """The SQLAlchemy error to raise for psycopg2 error `exc` met on our own cursor, as SQLAlchemy
    would raise it (OperationalError: the store is away); on SQLSTATE 26000 the prepared
    statements of `pool_connection` (if any left) are forgotten."""
    from sqlalchemy import exc as sa_exc

    if getattr(exc, "pgcode", None) == "26000" and pool_connection is not None:
        forget_prepared(pool_connection)
    return sa_exc.DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error,
                                      connection_invalidated=invalidated)


def engine_of(bind):
    """The engine under an Engine, Connection, Session or sessionmaker (no connection is taken)."""
    from sqlalchemy.orm import Session, sessionmaker

    if isinstance(bind, sessionmaker):
        with bind() as session:
            return session.get_bind()
    return bind.get_bind() if isinstance(bind, Session) else bind.engine


def pool_connection(conn):
    """The pool connection under a SQLAlchemy Connection (has `.info`, per DBAPI connection)."""
    return conn.connection


def driver_connection(conn):
    """The driver's own connection under a SQLAlchemy Connection (psycopg2 / sqlite3)."""
    return conn.connection.driver_connection


def kept_connection(engine, timeout_ms: int | None):
    """A PostgreSQL connection one thread keeps between its transactions (a pool checkout pings:
    a round trip): the driver in autocommit mode (the caller spells out BEGIN and COMMIT), the
    `timeouts` session limits set once. Never given back to the pool, where they would leak:
    `drop_connection` it."""
    connection = engine.connect()
    try:
        if timeout_ms:
            connection.exec_driver_sql(statement("postgresql", "timeouts", "session"), {"ms": timeout_ms})
            connection.commit()
        driver_connection(connection).autocommit = True
    except BaseException:
        connection.close()
        raise
    return connection


def drop_connection(connection) -> None:
    """Close a kept connection for good (invalidated: it does not go back to the pool)."""
    if connection is not None:
        with contextlib.suppress(Exception):   # already broken: nothing to give back
            connection.invalidate()
            connection.close()


def limit_sqlite_waits(engine, seconds: float) -> None:
    """SQLite: every connection checked out of `engine` waits at most `seconds` for the database
    lock (PRAGMA busy_timeout; one local call per checkout). Idempotent; no-op on other dialects."""
    if engine.dialect.name != "sqlite" or engine in _sqlite_limited:
        return
    from sqlalchemy import event

    busy = statement("sqlite", "timeouts", "busy").format(ms=max(1, int(seconds * 1000)))
    _sqlite_limited.add(engine)

    @event.listens_for(engine, "checkout")
    def _busy_timeout(dbapi_connection, _record, _proxy):
        dbapi_connection.execute(busy)


@contextlib.contextmanager
def bounded_transaction(sessions, ms: int):
    """A pooled session's transaction whose lock waits and statements end after `ms` on
    PostgreSQL (SQLite: the engine's busy_timeout, limit_sqlite_waits)."""
    with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            session.connection().exec_driver_sql(statement("postgresql", "timeouts", "local"), {"ms": ms})
        yield session


def sql_type(column, dialect) -> str:
    """The column's SQL type without length (an explicit cast to VARCHAR(n) silently truncates on
    PostgreSQL; too long must fail)."""
    return re.sub(r"\(.*\)", "", column.type.compile(dialect=dialect))
