-- radiusd schema for PostgreSQL (generated from radiusd/models.py by `radiusd db schema`;
-- do not edit by hand). Load into an empty database with:  psql -v ON_ERROR_STOP=1 -f schema/postgresql.sql
-- then seed with:  radiusd seed load schema/seeds/demo.sql
BEGIN;
CREATE TABLE account_usage (
	account_id INTEGER NOT NULL, 
	open_calls INTEGER DEFAULT '0' NOT NULL, 
	CONSTRAINT pk_account_usage PRIMARY KEY (account_id)
);

CREATE TABLE audit_log (
	id BIGSERIAL NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	object_type VARCHAR(32) NOT NULL, 
	object_id INTEGER, 
	object_name VARCHAR(200) DEFAULT '' NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	actor VARCHAR(100) NOT NULL, 
	context VARCHAR(16) NOT NULL, 
	changes TEXT DEFAULT '{}' NOT NULL, 
	CONSTRAINT pk_audit_log PRIMARY KEY (id)
);
CREATE INDEX ix_audit_log_at ON audit_log (at);
CREATE INDEX ix_audit_log_object ON audit_log (object_type, object_id);

CREATE TABLE cdr_legs (
	leg_key VARCHAR(255) NOT NULL, 
	cdr_id BIGINT, 
	disconnect_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	CONSTRAINT pk_cdr_legs PRIMARY KEY (leg_key)
);

CREATE TABLE cdrs (
	id BIGSERIAL NOT NULL, 
	leg_key VARCHAR(255) NOT NULL, 
	call_id VARCHAR(255) NOT NULL, 
	acct_session_id VARCHAR(255), 
	nas_id INTEGER, 
	leg VARCHAR(4) NOT NULL, 
	account_id INTEGER, 
	client_id INTEGER, 
	caller VARCHAR(64) DEFAULT '' NOT NULL, 
	called VARCHAR(64) DEFAULT '' NOT NULL, 
	tech_prefix VARCHAR(32) DEFAULT '' NOT NULL, 
	remote_address VARCHAR(64), 
	setup_time TIMESTAMP WITH TIME ZONE, 
	connect_time TIMESTAMP WITH TIME ZONE, 
	disconnect_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	duration BIGINT DEFAULT '0' NOT NULL, 
	billed_seconds BIGINT DEFAULT '0' NOT NULL, 
	disconnect_cause VARCHAR(32) DEFAULT '' NOT NULL, 
	result VARCHAR(12) NOT NULL, 
	rate_table_id INTEGER, 
	prefix VARCHAR(32), 
	price_per_minute NUMERIC(20, 6), 
	cost NUMERIC(20, 6) DEFAULT '0' NOT NULL, 
	currency VARCHAR(3) DEFAULT 'USD' NOT NULL, 
	flags VARCHAR(128) DEFAULT '' NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	CONSTRAINT pk_cdrs PRIMARY KEY (id, disconnect_time), 
	CONSTRAINT ck_cdrs_leg_known CHECK (leg IN ('orig', 'term')), 
	CONSTRAINT ck_cdrs_result_known CHECK (result IN ('success', 'busy', 'no_channel', 'error'))
)
 PARTITION BY RANGE (disconnect_time);
CREATE INDEX ix_cdrs_account_time ON cdrs (account_id, disconnect_time);
CREATE INDEX ix_cdrs_call_id ON cdrs (call_id);
CREATE INDEX ix_cdrs_client_time ON cdrs (client_id, disconnect_time);
CREATE INDEX ix_cdrs_nas_time ON cdrs (nas_id, disconnect_time);
CREATE TABLE IF NOT EXISTS cdrs_default PARTITION OF cdrs DEFAULT;

CREATE TABLE nas (
	id SERIAL NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	address VARCHAR(64) NOT NULL, 
	secret VARCHAR(2048) NOT NULL, 
	message_authenticator VARCHAR(4) DEFAULT 'auto' NOT NULL, 
	message_authenticator_seen_at TIMESTAMP WITH TIME ZONE, 
	dialect VARCHAR(16) DEFAULT 'cisco' NOT NULL, 
	caller_address_source VARCHAR(32) DEFAULT 'h323-remote-address' NOT NULL, 
	active BOOLEAN DEFAULT true NOT NULL, 
	notes TEXT DEFAULT '' NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	CONSTRAINT pk_nas PRIMARY KEY (id), 
	CONSTRAINT ck_nas_dialect_known CHECK (dialect IN ('cisco', 'kamailio', 'opensips', 'yate', 'generic')), 
	CONSTRAINT ck_nas_caller_source_known CHECK (caller_address_source IN ('h323-remote-address', 'framed-ip-address', 'nas-ip-address', 'packet-source')), 
	CONSTRAINT ck_nas_message_authenticator_policy_known CHECK (message_authenticator IN ('yes', 'no', 'auto')), 
	CONSTRAINT uq_nas_name UNIQUE (name), 
	CONSTRAINT uq_nas_address UNIQUE (address)
);

CREATE TABLE rate_tables (
	id SERIAL NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	currency VARCHAR(3) DEFAULT 'USD' NOT NULL, 
	notes TEXT DEFAULT '' NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	CONSTRAINT pk_rate_tables PRIMARY KEY (id), 
	CONSTRAINT uq_rate_tables_name UNIQUE (name)
);

CREATE TABLE routing_plans (
	id SERIAL NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	notes TEXT DEFAULT '' NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	CONSTRAINT pk_routing_plans PRIMARY KEY (id), 
	CONSTRAINT uq_routing_plans_name UNIQUE (name)
);

CREATE TABLE store_version (
	id SERIAL NOT NULL, 
	version BIGINT DEFAULT '0' NOT NULL, 
	changed_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	CONSTRAINT pk_store_version PRIMARY KEY (id)
);

CREATE TABLE web_users (
	id SERIAL NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	password_hash VARCHAR(255) NOT NULL, 
	role VARCHAR(8) NOT NULL, 
	active BOOLEAN DEFAULT true NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	CONSTRAINT pk_web_users PRIMARY KEY (id), 
	CONSTRAINT ck_web_users_role_known CHECK (role IN ('admin', 'viewer')), 
	CONSTRAINT uq_web_users_name UNIQUE (name)
);

CREATE TABLE api_tokens (
	id SERIAL NOT NULL, 
	user_id INTEGER NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	label VARCHAR(100) DEFAULT '' NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	last_used_at TIMESTAMP WITH TIME ZONE, 
	revoked_at TIMESTAMP WITH TIME ZONE, 
	CONSTRAINT pk_api_tokens PRIMARY KEY (id), 
	CONSTRAINT fk_api_tokens_user_id_web_users FOREIGN KEY(user_id) REFERENCES web_users (id) ON DELETE CASCADE, 
	CONSTRAINT uq_api_tokens_token_hash UNIQUE (token_hash)
);
CREATE INDEX ix_api_tokens_user_id ON api_tokens (user_id);

CREATE TABLE clients (
	id SERIAL NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	active BOOLEAN DEFAULT true NOT NULL, 
	balance NUMERIC(20, 6) DEFAULT '0' NOT NULL, 
	credit_limit NUMERIC(20, 6), 
	currency VARCHAR(3) DEFAULT 'USD' NOT NULL, 
	orig_rate_table_id INTEGER, 
	term_rate_table_id INTEGER, 
	routing_plan_id INTEGER, 
	capacity INTEGER, 
	max_call_duration INTEGER, 
	notes TEXT DEFAULT '' NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	open_calls INTEGER DEFAULT '0' NOT NULL, 
	money_held NUMERIC(20, 6) DEFAULT '0' NOT NULL, 
	CONSTRAINT pk_clients PRIMARY KEY (id), 
	CONSTRAINT ck_clients_capacity_not_negative CHECK (capacity IS NULL OR capacity >= 0), 
	CONSTRAINT ck_clients_max_call_duration_positive CHECK (max_call_duration IS NULL OR max_call_duration > 0), 
	CONSTRAINT uq_clients_name UNIQUE (name), 
	CONSTRAINT fk_clients_orig_rate_table_id_rate_tables FOREIGN KEY(orig_rate_table_id) REFERENCES rate_tables (id) ON DELETE SET NULL, 
	CONSTRAINT fk_clients_term_rate_table_id_rate_tables FOREIGN KEY(term_rate_table_id) REFERENCES rate_tables (id) ON DELETE SET NULL, 
	CONSTRAINT fk_clients_routing_plan_id_routing_plans FOREIGN KEY(routing_plan_id) REFERENCES routing_plans (id) ON DELETE SET NULL
);

CREATE TABLE rates (
	id SERIAL NOT NULL, 
	rate_table_id INTEGER NOT NULL, 
	prefix VARCHAR(32) NOT NULL, 
	description VARCHAR(200) DEFAULT '' NOT NULL, 
	price_per_minute NUMERIC(20, 6) NOT NULL, 
	connection_fee NUMERIC(20, 6) DEFAULT '0' NOT NULL, 
	minimum_seconds INTEGER DEFAULT '0' NOT NULL, 
	interval_seconds INTEGER DEFAULT '1' NOT NULL, 
	grace_seconds INTEGER DEFAULT '0' NOT NULL, 
	effective_from TIMESTAMP WITH TIME ZONE NOT NULL, 
	effective_until TIMESTAMP WITH TIME ZONE, 
	CONSTRAINT pk_rates PRIMARY KEY (id), 
	CONSTRAINT uq_rates_rate_table_id_prefix_effective_from UNIQUE (rate_table_id, prefix, effective_from), 
	CONSTRAINT ck_rates_price_not_negative CHECK (price_per_minute >= 0), 
	CONSTRAINT ck_rates_fee_not_negative CHECK (connection_fee >= 0), 
	CONSTRAINT ck_rates_minimum_not_negative CHECK (minimum_seconds >= 0), 
	CONSTRAINT ck_rates_interval_positive CHECK (interval_seconds >= 1), 
	CONSTRAINT ck_rates_grace_not_negative CHECK (grace_seconds >= 0), 
	CONSTRAINT fk_rates_rate_table_id_rate_tables FOREIGN KEY(rate_table_id) REFERENCES rate_tables (id) ON DELETE CASCADE
);
CREATE INDEX ix_rates_rate_table_id ON rates (rate_table_id);

CREATE TABLE accounts (
	id SERIAL NOT NULL, 
	client_id INTEGER NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	ident_by VARCHAR(8) NOT NULL, 
	ani VARCHAR(64), 
	tech_prefix VARCHAR(32) DEFAULT '' NOT NULL, 
	password VARCHAR(2048), 
	active BOOLEAN DEFAULT true NOT NULL, 
	notes TEXT DEFAULT '' NOT NULL, 
	max_call_duration INTEGER, 
	orig_enabled BOOLEAN DEFAULT true NOT NULL, 
	orig_rate_table_id INTEGER, 
	orig_routing_plan_id INTEGER, 
	orig_tag VARCHAR(64) DEFAULT '' NOT NULL, 
	orig_capacity INTEGER, 
	term_enabled BOOLEAN DEFAULT false NOT NULL, 
	term_rate_table_id INTEGER, 
	term_tag VARCHAR(64) DEFAULT '' NOT NULL, 
	term_capacity INTEGER, 
	term_protocol VARCHAR(8), 
	term_proxy VARCHAR(255), 
	term_port INTEGER, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	CONSTRAINT pk_accounts PRIMARY KEY (id), 
	CONSTRAINT ck_accounts_ident_by_known CHECK (ident_by IN ('ip', 'name', 'ani')), 
	CONSTRAINT ck_accounts_orig_capacity_not_negative CHECK (orig_capacity IS NULL OR orig_capacity >= 0), 
	CONSTRAINT ck_accounts_term_capacity_not_negative CHECK (term_capacity IS NULL OR term_capacity >= 0), 
	CONSTRAINT ck_accounts_term_port_range CHECK (term_port IS NULL OR (term_port BETWEEN 1 AND 65535)), 
	CONSTRAINT ck_accounts_term_protocol_known CHECK (term_protocol IS NULL OR term_protocol IN ('sip', 'h323')), 
	CONSTRAINT ck_accounts_ani_account_has_ani CHECK (ident_by <> 'ani' OR ani IS NOT NULL), 
	CONSTRAINT ck_accounts_max_call_duration_positive CHECK (max_call_duration IS NULL OR max_call_duration > 0), 
	CONSTRAINT fk_accounts_client_id_clients FOREIGN KEY(client_id) REFERENCES clients (id) ON DELETE RESTRICT, 
	CONSTRAINT uq_accounts_name UNIQUE (name), 
	CONSTRAINT fk_accounts_orig_rate_table_id_rate_tables FOREIGN KEY(orig_rate_table_id) REFERENCES rate_tables (id) ON DELETE SET NULL, 
	CONSTRAINT fk_accounts_orig_routing_plan_id_routing_plans FOREIGN KEY(orig_routing_plan_id) REFERENCES routing_plans (id) ON DELETE SET NULL, 
	CONSTRAINT fk_accounts_term_rate_table_id_rate_tables FOREIGN KEY(term_rate_table_id) REFERENCES rate_tables (id) ON DELETE SET NULL
);
CREATE INDEX ix_accounts_client_id ON accounts (client_id);
CREATE UNIQUE INDEX uq_accounts_ani_identity ON accounts (ani, tech_prefix) WHERE ident_by = 'ani';

CREATE TABLE account_gateways (
	account_id INTEGER NOT NULL, 
	nas_id INTEGER NOT NULL, 
	CONSTRAINT pk_account_gateways PRIMARY KEY (account_id, nas_id), 
	CONSTRAINT fk_account_gateways_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE, 
	CONSTRAINT fk_account_gateways_nas_id_nas FOREIGN KEY(nas_id) REFERENCES nas (id) ON DELETE CASCADE
);
CREATE INDEX ix_account_gateways_nas_id ON account_gateways (nas_id);

CREATE TABLE account_networks (
	id SERIAL NOT NULL, 
	account_id INTEGER NOT NULL, 
	cidr VARCHAR(64) NOT NULL, 
	position INTEGER DEFAULT '0' NOT NULL, 
	CONSTRAINT pk_account_networks PRIMARY KEY (id), 
	CONSTRAINT uq_account_networks_account_id_cidr UNIQUE (account_id, cidr), 
	CONSTRAINT fk_account_networks_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
);
CREATE INDEX ix_account_networks_cidr ON account_networks (cidr);

CREATE TABLE active_calls (
	id BIGSERIAL NOT NULL, 
	leg_key VARCHAR(255) NOT NULL, 
	call_id VARCHAR(255) NOT NULL, 
	acct_session_id VARCHAR(255), 
	nas_id INTEGER, 
	leg VARCHAR(4) DEFAULT 'orig' NOT NULL, 
	state VARCHAR(8) NOT NULL, 
	account_id INTEGER, 
	client_id INTEGER, 
	caller VARCHAR(64) DEFAULT '' NOT NULL, 
	called VARCHAR(64) DEFAULT '' NOT NULL, 
	rate_table_id INTEGER, 
	prefix VARCHAR(32), 
	max_cost NUMERIC(20, 6) DEFAULT '0' NOT NULL, 
	max_duration INTEGER, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	expires_at TIMESTAMP WITH TIME ZONE, 
	started_at TIMESTAMP WITH TIME ZONE, 
	last_seen_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	session_seconds BIGINT DEFAULT '0' NOT NULL, 
	setup_at TIMESTAMP WITH TIME ZONE, 
	flags VARCHAR(128) DEFAULT '' NOT NULL, 
	CONSTRAINT pk_active_calls PRIMARY KEY (id), 
	CONSTRAINT ck_active_calls_leg_known CHECK (leg IN ('orig', 'term')), 
	CONSTRAINT ck_active_calls_state_known CHECK (state IN ('reserved', 'active')), 
	CONSTRAINT uq_active_calls_leg_key UNIQUE (leg_key), 
	CONSTRAINT fk_active_calls_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE, 
	CONSTRAINT fk_active_calls_client_id_clients FOREIGN KEY(client_id) REFERENCES clients (id) ON DELETE CASCADE
);
CREATE INDEX ix_active_calls_account_id ON active_calls (account_id);
CREATE INDEX ix_active_calls_client_id ON active_calls (client_id);
CREATE INDEX ix_active_calls_client_reserved_expiry ON active_calls (client_id, expires_at) WHERE state = 'reserved';
CREATE INDEX ix_active_calls_nas_open ON active_calls (nas_id) WHERE state = 'active';
CREATE INDEX ix_active_calls_reserved_expiry ON active_calls (expires_at) WHERE state = 'reserved';
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

CREATE TABLE routing_rules (
	id SERIAL NOT NULL, 
	routing_plan_id INTEGER NOT NULL, 
	priority INTEGER DEFAULT '0' NOT NULL, 
	prefix VARCHAR(32) DEFAULT '' NOT NULL, 
	terminator_account_id INTEGER, 
	share INTEGER DEFAULT '100' NOT NULL, 
	CONSTRAINT pk_routing_rules PRIMARY KEY (id), 
	CONSTRAINT fk_routing_rules_routing_plan_id_routing_plans FOREIGN KEY(routing_plan_id) REFERENCES routing_plans (id) ON DELETE CASCADE, 
	CONSTRAINT fk_routing_rules_terminator_account_id_accounts FOREIGN KEY(terminator_account_id) REFERENCES accounts (id) ON DELETE CASCADE
);
CREATE INDEX ix_routing_rules_routing_plan_id ON routing_rules (routing_plan_id);

INSERT INTO store_version (id, version) VALUES (1, 0);
COMMIT;
