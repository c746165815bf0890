"""PostgreSQL DDL generated from the models: what `schema/postgresql.sql` must contain
(`radiusd db schema > schema/postgresql.sql`; tests/test_schema.py fails when they drift apart)."""
from __future__ import annotations

from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from radiusd.models import CDR_DEFAULT_PARTITION, ActiveCall, Base, Cdr
from radiusd.store import sql


def postgresql_ddl() -> str:
    dialect = postgresql.dialect()
    fixed = sql.statements("postgresql", "ddl")
    parts = [fixed["header"]]
    for table in Base.metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";\n")
        for index in sorted(table.indexes, key=lambda i: i.name):
            parts.append(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";\n")
        if table is Cdr.__table__:
            # monthly partitions are created ahead by `radiusd db partitions` and the sweeper
            parts.append(CDR_DEFAULT_PARTITION + ";\n")
        if table is ActiveCall.__table__:
            # the usage counters of clients and accounts (created with the table by radiusd.db)
            parts.append(fixed["usage_triggers"])
        parts.append("\n")
    return "".join(parts) + fixed["store_version"] + fixed["footer"]
