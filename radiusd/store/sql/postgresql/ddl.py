"""The fixed parts of `schema/postgresql.sql` around the DDL generated from the models
(radiusd.store.ddl)."""
from __future__ import annotations

STATEMENTS = {
    "header": """\
-- radiusd schema for PostgreSQL (generated from radiusd/models.py by `radiusd db schema`;
-- do not edit by hand). Load into an empty database with:  psql -v ON_ERROR_STOP=1 -f schema/postgresql.sql
-- then seed with:  radiusd seed load schema/seeds/demo.sql
BEGIN;
""",
    "store_version": "INSERT INTO store_version (id, version) VALUES (1, 0);\n",
    "footer": "COMMIT;\n",
}
