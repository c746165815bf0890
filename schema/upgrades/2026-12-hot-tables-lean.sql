-- Upgrade a PostgreSQL store made before issue 12's accounting work: the tables every accounting
-- request writes (active_calls: a row per Start, deleted at its Stop; cdrs: a row per Stop) lose
-- the foreign keys and indexes no query needs. Each foreign key cost a check and a KEY SHARE lock
-- of the referenced row (the NAS row every call shares) per row written; ON DELETE SET NULL of
-- a NAS or rate table is now done by the delete itself (radiusd.store.accounting.forget_references).
-- active_calls keeps its keys to accounts and clients (admission detects a deletion by them).
-- One transaction; safe to run again; quick (drops only):
--   psql -v ON_ERROR_STOP=1 -f schema/upgrades/2026-12-hot-tables-lean.sql radiusd
BEGIN;

ALTER TABLE active_calls DROP CONSTRAINT IF EXISTS fk_active_calls_nas_id_nas;
ALTER TABLE active_calls DROP CONSTRAINT IF EXISTS fk_active_calls_rate_table_id_rate_tables;
DROP INDEX IF EXISTS ix_active_calls_call_id;

ALTER TABLE cdrs DROP CONSTRAINT IF EXISTS fk_cdrs_nas_id_nas;
ALTER TABLE cdrs DROP CONSTRAINT IF EXISTS fk_cdrs_account_id_accounts;
ALTER TABLE cdrs DROP CONSTRAINT IF EXISTS fk_cdrs_client_id_clients;
ALTER TABLE cdrs DROP CONSTRAINT IF EXISTS fk_cdrs_rate_table_id_rate_tables;
DROP INDEX IF EXISTS ix_cdrs_leg_key;   -- and its copy on every partition

COMMIT;
