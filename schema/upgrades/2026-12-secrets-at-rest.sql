-- Upgrade a PostgreSQL store made before secrets at rest (issue 11): account passwords and NAS
-- secrets are stored sealed (AES-256-GCM, base64), longer than the clear values. Run once, then
-- seal the clear values already there (until then the server refuses those rows, one log line each):
--   psql -v ON_ERROR_STOP=1 -f schema/upgrades/2026-12-secrets-at-rest.sql radiusd
--   radiusd secrets seal-existing
BEGIN;

ALTER TABLE nas ALTER COLUMN secret TYPE VARCHAR(2048);
ALTER TABLE accounts ALTER COLUMN password TYPE VARCHAR(2048);

COMMIT;
