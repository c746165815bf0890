-- Upgrade a PostgreSQL store made before the Message-Authenticator policy and the per-client /
-- per-account max call duration (issue 9). One transaction; run once:
--   psql -v ON_ERROR_STOP=1 -f schema/upgrades/2026-12-nas-message-authenticator-max-call-duration.sql radiusd
-- A NAS keeps what it had: require_message_authenticator true -> policy 'yes', false -> 'no'.
-- Switches that cannot send Message-Authenticator (Kamailio 5.6 with radcli, Yate) want 'auto':
--   radiusd nas update NAS --message-authenticator auto
BEGIN;

ALTER TABLE nas ADD COLUMN message_authenticator VARCHAR(4) DEFAULT 'auto' NOT NULL;
UPDATE nas SET message_authenticator = CASE WHEN require_message_authenticator THEN 'yes' ELSE 'no' END;
ALTER TABLE nas DROP COLUMN require_message_authenticator;
ALTER TABLE nas ADD COLUMN message_authenticator_seen_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE nas ADD CONSTRAINT ck_nas_message_authenticator_policy_known
    CHECK (message_authenticator IN ('yes', 'no', 'auto'));

ALTER TABLE clients ADD COLUMN max_call_duration INTEGER;
ALTER TABLE clients ADD CONSTRAINT ck_clients_max_call_duration_positive
    CHECK (max_call_duration IS NULL OR max_call_duration > 0);
ALTER TABLE accounts ADD COLUMN max_call_duration INTEGER;
ALTER TABLE accounts ADD CONSTRAINT ck_accounts_max_call_duration_positive
    CHECK (max_call_duration IS NULL OR max_call_duration > 0);

-- running servers reload their admin data
UPDATE store_version SET version = version + 1, changed_at = CURRENT_TIMESTAMP WHERE id = 1;

COMMIT;
