-- Upgrade a PostgreSQL store made before the usage counters (issue 12): admission reads each
-- client's open calls and money held, and each account's open calls, from counters that triggers
-- on active_calls keep (radiusd/store/sql/postgresql/ddl.py), instead of aggregating the open legs
-- of every locked client. One transaction; safe to run again:
--   psql -v ON_ERROR_STOP=1 -f schema/upgrades/2026-12-usage-counters.sql radiusd
-- It locks active_calls while it fills the counters from the legs (a moment): servers may run.
BEGIN;

ALTER TABLE clients ADD COLUMN IF NOT EXISTS open_calls INTEGER DEFAULT '0' NOT NULL;
ALTER TABLE clients ADD COLUMN IF NOT EXISTS money_held NUMERIC(20, 6) DEFAULT '0' NOT NULL;
CREATE TABLE IF NOT EXISTS account_usage (
    account_id INTEGER NOT NULL,
    open_calls INTEGER DEFAULT '0' NOT NULL,
    CONSTRAINT pk_account_usage PRIMARY KEY (account_id)
);
CREATE INDEX IF NOT EXISTS ix_active_calls_client_reserved_expiry ON active_calls (client_id, expires_at)
    WHERE state = 'reserved';

-- no leg changes between the triggers' creation and the counters' fill
LOCK TABLE active_calls IN SHARE ROW EXCLUSIVE MODE;
DROP TRIGGER IF EXISTS radiusd_usage_insert ON active_calls;
DROP TRIGGER IF EXISTS radiusd_usage_update ON active_calls;
DROP TRIGGER IF EXISTS radiusd_usage_delete ON active_calls;
DROP TRIGGER IF EXISTS radiusd_usage_truncate ON active_calls;

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
        FROM new_legs WHERE leg = 'orig';
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION radiusd_usage_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM radiusd_usage_add(array_agg(client_id), array_agg(account_id), array_agg(-1), array_agg(-max_cost))
        FROM old_legs WHERE leg = 'orig';
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION radiusd_usage_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM radiusd_usage_add(array_agg(d.client_id), array_agg(d.account_id), array_agg(d.n), array_agg(d.h))
        FROM old_legs AS o JOIN new_legs AS n ON n.id = o.id
        CROSS JOIN LATERAL (VALUES (o.leg, o.client_id, o.account_id, -1, -o.max_cost),
                                   (n.leg, n.client_id, n.account_id, 1, n.max_cost)) AS d (leg, client_id, account_id, n, h)
        WHERE d.leg = 'orig'
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

UPDATE clients AS c SET open_calls = coalesce(l.calls, 0), money_held = coalesce(l.held, 0)
    FROM clients AS k LEFT JOIN (SELECT client_id, count(*) AS calls, sum(max_cost) AS held FROM active_calls
                                 WHERE leg = 'orig' GROUP BY client_id) AS l ON l.client_id = k.id
    WHERE c.id = k.id;
DELETE FROM account_usage;
INSERT INTO account_usage (account_id, open_calls)
    SELECT account_id, count(*) FROM active_calls WHERE leg = 'orig' AND account_id IS NOT NULL GROUP BY account_id;

COMMIT;
