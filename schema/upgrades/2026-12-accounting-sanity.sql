-- Upgrade a PostgreSQL store made before accounting sanity (issue 11): 32-bit unsigned durations
-- fit (Acct-Session-Time up to 2^32 - 1), CDRs carry the anomalies corrected on the way in, and
-- open calls keep the switch's setup time for a CDR closed without a Stop. One transaction; safe to run again:
--   psql -v ON_ERROR_STOP=1 -f schema/upgrades/2026-12-accounting-sanity.sql radiusd
-- Rewrites cdrs (every partition) and active_calls: run it in a quiet hour.
BEGIN;

ALTER TABLE active_calls ALTER COLUMN session_seconds TYPE BIGINT;
ALTER TABLE active_calls ADD COLUMN IF NOT EXISTS setup_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE active_calls ADD COLUMN IF NOT EXISTS flags VARCHAR(128) DEFAULT '' NOT NULL;
ALTER TABLE cdrs ALTER COLUMN duration TYPE BIGINT;
ALTER TABLE cdrs ALTER COLUMN billed_seconds TYPE BIGINT;
ALTER TABLE cdrs ADD COLUMN IF NOT EXISTS flags VARCHAR(128) DEFAULT '' NOT NULL;

COMMIT;
