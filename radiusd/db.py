"""Engine and session factory for the store (PostgreSQL in production, SQLite embedded)."""
from __future__ import annotations

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from radiusd.models import Base, StoreVersion


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg2 here (SQLAlchemy 2.1 would pick psycopg 3, not installed)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, **kwargs) -> Engine:
    """An engine configured for our use of each backend."""
    url = normalise_url(url)
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
    """(engine, sessionmaker) for a store URL; creates the schema when asked (embedded default)."""
    engine = make_engine(database_url)
    if create:
        create_schema(engine)
    return engine, make_sessionmaker(engine)
