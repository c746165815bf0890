"""The fixed parts of `schema/postgresql.sql` around the DDL generated from the models
(radiusd.store.ddl), and the usage triggers every PostgreSQL store has. Pure text, no imports:
radiusd.db runs `usage_triggers` when it creates `active_calls`; schema/upgrades/
2026-12-usage-counters.sql holds the same text.

Usage counters (radiusd.core.admission): `clients.open_calls` / `clients.money_held` and
`account_usage.open_calls` count the originating legs in `active_calls` and sum their `max_cost`.
Statement-level triggers with transition tables keep them in the transaction that writes the legs,
whoever writes them: a group of 64 records updates each client row once. A row whose counted
columns did not change (an Interim, a Start taking its reservation over) touches no client. Client
rows are locked in id order, as every path locks them (radiusd.store.sql), before any counter
changes; the client's lock guards its accounts' counters too.
"""
from __future__ import annotations

_COUNTED = "leg = 'orig'"   # every orig row is reserved or active (check constraint state_known)

USAGE_TRIGGERS = f"""\
CREATE OR REPLACE FUNCTION radiusd_usage_add(client_ids INTEGER[], account_ids INTEGER[], calls INTEGER[],
                                             held NUMERIC[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF client_ids IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM clients WHERE id IN (
        SELECT c FROM unnest(client_ids, calls, held) AS u (c, n, h) GROUP BY c HAVING sum(n) <> 0 OR sum(h) <> 0)
        ORDER BY id FOR NO KEY UPDATE;
    UPDATE clients AS c SET open_calls = c.open_calls + d.n, money_held = c.money_held + d.h
        FROM (SELECT c AS id, sum(n) AS n, sum(h) AS h FROM unnest(client_ids, calls, held) AS u (c, n, h)
              GROUP BY c) AS d
        WHERE c.id = d.id AND (d.n <> 0 OR d.h <> 0);
    INSERT INTO account_usage AS u (account_id, open_calls)
        SELECT a, sum(n) FROM unnest(account_ids, calls) AS d (a, n) WHERE a IS NOT NULL
        GROUP BY a HAVING sum(n) <> 0 ORDER BY a
        ON CONFLICT (account_id) DO UPDATE SET open_calls = u.open_calls + excluded.open_calls;
END $$;

CREATE OR REPLACE FUNCTION radiusd_usage_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM radiusd_usage_add(array_agg(client_id), array_agg(account_id), array_agg(1), array_agg(max_cost))
        FROM new_legs WHERE {_COUNTED};
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION radiusd_usage_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM radiusd_usage_add(array_agg(client_id), array_agg(account_id), array_agg(-1), array_agg(-max_cost))
        FROM old_legs WHERE {_COUNTED};
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION radiusd_usage_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM radiusd_usage_add(array_agg(d.client_id), array_agg(d.account_id), array_agg(d.n), array_agg(d.h))
        FROM old_legs AS o JOIN new_legs AS n ON n.id = o.id
        CROSS JOIN LATERAL (VALUES (o.leg, o.client_id, o.account_id, -1, -o.max_cost),
                                   (n.leg, n.client_id, n.account_id, 1, n.max_cost)) AS d (leg, client_id, account_id, n, h)
        WHERE d.{_COUNTED}
          AND (o.leg, o.client_id, o.account_id, o.max_cost) IS DISTINCT FROM (n.leg, n.client_id, n.account_id, n.max_cost);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION radiusd_usage_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE clients SET open_calls = 0, money_held = 0 WHERE open_calls <> 0 OR money_held <> 0;
    DELETE FROM account_usage;
    RETURN NULL;
END $$;

CREATE TRIGGER radiusd_usage_insert AFTER INSERT ON active_calls REFERENCING NEW TABLE AS new_legs
    FOR EACH STATEMENT EXECUTE FUNCTION radiusd_usage_inserted();
CREATE TRIGGER radiusd_usage_update AFTER UPDATE ON active_calls REFERENCING OLD TABLE AS old_legs NEW TABLE AS new_legs
    FOR EACH STATEMENT EXECUTE FUNCTION radiusd_usage_updated();
CREATE TRIGGER radiusd_usage_delete AFTER DELETE ON active_calls REFERENCING OLD TABLE AS old_legs
    FOR EACH STATEMENT EXECUTE FUNCTION radiusd_usage_deleted();
CREATE TRIGGER radiusd_usage_truncate AFTER TRUNCATE ON active_calls
    FOR EACH STATEMENT EXECUTE FUNCTION radiusd_usage_truncated();
"""

STATEMENTS = {
    "header": """\
-- radiusd schema for PostgreSQL (generated from radiusd/models.py by `radiusd db schema`;
-- do not edit by hand). Load into an empty database with:  psql -v ON_ERROR_STOP=1 -f schema/postgresql.sql
-- then seed with:  radiusd seed load schema/seeds/demo.sql
BEGIN;
""",
    "usage_triggers": USAGE_TRIGGERS,
    "store_version": "INSERT INTO store_version (id, version) VALUES (1, 0);\n",
    "footer": "COMMIT;\n",
}
