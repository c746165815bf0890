"""Engine and session factory for the store (PostgreSQL in production, SQLite embedded)."""
from __future__ import annotations

import os

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from radiusd.errors import UserError
from radiusd.models import ActiveCall, Base, StoreVersion
from radiusd.store.sql.postgresql import ddl as postgresql_ddl
from radiusd.store.sql.sqlite import ddl as sqlite_ddl

# the URL schemes we run on: the embedded SQLite file and PostgreSQL through psycopg2
_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg2")


def check_url(url: str) -> str:
    """The URL itself, or a UserError when its scheme is not one we run on."""
    scheme = str(url).split("://", 1)[0].lower() if "://" in str(url) else ""
    if scheme not in _SCHEMES:
        raise UserError(f"database_url: expected a sqlite or postgresql URL, e.g. sqlite:///radiusd.sqlite3 "
                        f"or postgresql://user:pass@host/db ({safe_url(url)})")
    return url


def normalise_url(url: str) -> str:
    """The store URL as SQLAlchemy + psycopg2 take it.

    - `postgresql://` and `postgres://` mean psycopg2 (SQLAlchemy 2.1 would pick psycopg 3, not installed);
    - libpq's multi-host form `postgresql://u:p@db1,db2:5433/radiusd?target_session_attrs=read-write`
      (what operators write for a primary + standby) becomes `...@/radiusd?host=db1,db2&port=,5433&...`,
      the form SQLAlchemy hands to libpq; libpq then tries the hosts in order. The `?host=...&host=...`
      form passes through unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg2"
    if scheme.startswith("postgresql"):
        rest = _multi_host_to_query(rest)
    return f"{scheme}://{rest}"


def _multi_host_to_query(rest: str) -> str:
    """`u:p@h1,h2:p2/db?q` -> `u:p@/db?host=h1,h2&port=,p2&q` (unchanged without a comma in the host list)."""
    netloc, slash, tail = rest.partition("/")
    if not slash:  # no database part: the query may follow the host list directly
        netloc, qmark, query = rest.partition("?")
        tail = f"?{query}" if qmark else ""
    userinfo, at, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return rest
    hosts, ports = [], []
    for item in hostlist.split(","):
        if item.startswith("["):  # [IPv6]:port
            host, _, after = item[1:].partition("]")
            port = after[1:] if after.startswith(":") else ""
        else:
            host, _, port = item.partition(":")
        hosts.append(host)
        ports.append(port)
    database, qmark, query = tail.partition("?")
    params = [f"host={','.join(hosts)}"] + ([f"port={','.join(ports)}"] if any(ports) else [])
    if query:
        params.append(query)
    return f"{userinfo}{at}/{database}?{'&'.join(params)}"


def safe_url(url: str) -> str:
    """A store URL fit to print or log, as the operator wrote it (several hosts stay a host list),
    with the password (in the user part or a `password=` parameter) shown as ***."""
    from sqlalchemy.engine import make_url

    try:
        make_url(normalise_url(url))
    except Exception:  # a URL SQLAlchemy cannot read has no password we could find either
        return "(unparsable URL)"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hostlist = netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    path, qmark, query = tail.partition("?")
    if query:
        query = "&".join("password=***" if p.lower().startswith("password=") else p for p in query.split("&"))
    return f"{scheme}://{userinfo}{at}{hostlist}{path}{qmark}{query}"


def sqlite_file(url: str) -> str | None:
    """The file an SQLite URL names; None for other stores and for in-memory SQLite."""
    if not str(url).startswith("sqlite"):
        return None
    path = str(url).split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel.db -> rel.db, sqlite:////abs -> /abs
    return None if path in ("", ":memory:") else path


def require_store(engine: Engine, url: str) -> None:
    """A UserError naming the URL unless the store exists with our schema (nothing is created)."""
    if not inspect(engine).has_table(StoreVersion.__tablename__):
        raise UserError(f"database_url: no radiusd store here; create it with `radiusd db init` "
                        f"({safe_url(url)})")


def make_engine(url: str, **kwargs) -> Engine:
    """An engine configured for our use of each backend."""
    url = normalise_url(check_url(url))
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # Let SQLAlchemy issue BEGIN itself so that a write transaction takes the
            # database lock up front (BEGIN IMMEDIATE): SQLite's stand-in for row locks.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@event.listens_for(ActiveCall.__table__, "after_create")
def _usage_triggers(_table, connection, **_kw) -> None:
    """The triggers that keep the usage counters (pure SQL text of radiusd.store.sql: see
    radiusd.store.sql.postgresql.ddl), created with the table they watch."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(postgresql_ddl.USAGE_TRIGGERS)
    elif connection.dialect.name == "sqlite":
        for statement in sqlite_ddl.STATEMENTS["usage_triggers"]:
            connection.exec_driver_sql(statement)


def create_schema(engine: Engine) -> None:
    """Create every table (idempotent) and the store version row."""
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        if session.get(StoreVersion, 1) is None:
            session.add(StoreVersion(id=1, version=0))


def bump_store_version(session: Session) -> None:
    """Tell running servers that admin data changed: they poll this counter (works on SQLite too)."""
    session.execute(
        StoreVersion.__table__.update().where(StoreVersion.id == 1).values(version=StoreVersion.version + 1)
    )


def current_store_version(session: Session) -> int:
    return session.scalar(select(StoreVersion.version).where(StoreVersion.id == 1)) or 0


def open_store(database_url: str, create: bool = True):
    """(engine, sessionmaker) for a store URL.

    create=True makes the schema (idempotent: `db init`, the demo); create=False wants an existing
    store and is a UserError naming the URL otherwise, so a typo never leaves an empty store behind
    (an SQLite file would be created by merely connecting, hence the file check first).
    """
    check_url(database_url)
    path = sqlite_file(database_url)
    if not create and path is not None and not os.path.exists(path):
        raise UserError(f"database_url: no such store (file {path} does not exist); create it with "
                        f"`radiusd db init` ({safe_url(database_url)})")
    engine = make_engine(database_url)
    if create:
        create_schema(engine)
    else:
        try:
            require_store(engine, database_url)
        except BaseException:
            engine.dispose()
            raise
    return engine, make_sessionmaker(engine)
