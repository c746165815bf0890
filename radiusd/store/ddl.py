"""PostgreSQL DDL generated from the models: what `schema/postgresql.sql` must contain.

`radiusd db schema > schema/postgresql.sql` regenerates the file; tests/test_schema.py fails
when the file and the models drift apart.
"""
from __future__ import annotations

from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from radiusd.models import CDR_DEFAULT_PARTITION, Base, Cdr

HEADER = """\
-- radiusd schema for PostgreSQL (generated from radiusd/models.py by `radiusd db schema`;
-- do not edit by hand). Load into an empty database with:  psql -v ON_ERROR_STOP=1 -f schema/postgresql.sql
-- then seed with:  radiusd seed load schema/seeds/demo.sql
BEGIN;
"""


def postgresql_ddl() -> str:
    dialect = postgresql.dialect()
    parts = [HEADER]
    for table in Base.metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";\n")
        for index in sorted(table.indexes, key=lambda i: i.name):
            parts.append(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";\n")
        if table is Cdr.__table__:
            # monthly partitions are created ahead by `radiusd db partitions` and the sweeper
            parts.append(CDR_DEFAULT_PARTITION + ";\n")
        parts.append("\n")
    parts.append("INSERT INTO store_version (id, version) VALUES (1, 0);\n")
    parts.append("COMMIT;\n")
    return "".join(parts)
