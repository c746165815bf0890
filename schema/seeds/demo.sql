-- radiusd demo data: three NAS on loopback, two rate tables, one routing plan,
-- five clients and ten accounts covering every way an account is identified.
-- Load with:  radiusd seed load schema/seeds/demo.sql
-- Portable SQL (PostgreSQL and SQLite); ids are explicit so other rows can refer to them.

-- NAS: the switches allowed to talk RADIUS to us.
INSERT INTO nas (id, name, address, secret, message_authenticator, dialect, caller_address_source, active, notes) VALUES
  (1, 'localhost',    '127.0.0.1/32', 'testing123', 'auto', 'cisco',    'h323-remote-address', TRUE, 'demo: Cisco-style switch on IPv4 loopback'),
  (2, 'localhost6',   '::1/128',      'testing123', 'auto', 'cisco',    'h323-remote-address', TRUE, 'demo: Cisco-style switch on IPv6 loopback'),
  (3, 'kamailio-lab', '127.0.0.2/32', 'testing123', 'auto', 'kamailio', 'packet-source',       TRUE, 'demo: Kamailio SIP proxy');

-- Rate tables: what clients pay (retail) and what we pay the vendor (wholesale).
INSERT INTO rate_tables (id, name, currency, notes) VALUES
  (1, 'retail-usd',    'USD', 'demo: customer prices'),
  (2, 'wholesale-usd', 'USD', 'demo: vendor prices');

INSERT INTO rates (id, rate_table_id, prefix, description, price_per_minute, connection_fee, minimum_seconds, interval_seconds, grace_seconds, effective_from, effective_until) VALUES
  (1, 1, '1',    'USA/Canada',           0.010, 0.00, 60, 60, 0, '1970-01-01T00:00:00+00:00', NULL),
  (2, 1, '44',   'United Kingdom',       0.020, 0.00,  1,  1, 0, '1970-01-01T00:00:00+00:00', NULL),
  (3, 1, '4420', 'United Kingdom London', 0.015, 0.00, 30,  6, 5, '1970-01-01T00:00:00+00:00', NULL),
  (4, 1, '49',   'Germany',              0.030, 0.05, 60, 60, 0, '1970-01-01T00:00:00+00:00', NULL),
  (5, 1, '33',   'France (from 2030)',   0.025, 0.00,  1,  1, 0, '2030-01-01T00:00:00+00:00', NULL),
  (6, 2, '1',    'USA/Canada',           0.006, 0.00,  1,  1, 0, '1970-01-01T00:00:00+00:00', NULL),
  (7, 2, '44',   'United Kingdom',       0.012, 0.00,  1,  1, 0, '1970-01-01T00:00:00+00:00', NULL),
  (8, 2, '4420', 'United Kingdom London', 0.009, 0.00,  1,  1, 0, '1970-01-01T00:00:00+00:00', NULL),
  (9, 2, '49',   'Germany',              0.018, 0.00,  1,  1, 0, '1970-01-01T00:00:00+00:00', NULL);

-- Routing plan (its rules come after the terminator account they point to).
INSERT INTO routing_plans (id, name, notes) VALUES
  (1, 'default', 'demo: everything to Carrier B');

-- Clients. credit_limit NULL = unlimited credit.
INSERT INTO clients (id, name, active, balance, credit_limit, currency, orig_rate_table_id, term_rate_table_id, routing_plan_id, capacity, notes) VALUES
  (1, 'Acme Telecom',    TRUE, 100.00, 50.00, 'USD', 1,    NULL, 1,    10,   'demo: customer with balance and credit'),
  (2, 'Beta Voice',      TRUE,   0.00,  0.00, 'USD', 1,    NULL, 1,    NULL, 'demo: customer out of money'),
  (3, 'Carrier B',       TRUE,   0.00,  NULL, 'USD', NULL, 2,    NULL, NULL, 'demo: vendor'),
  (4, 'Gamma Unlimited', TRUE,   0.00,  NULL, 'USD', 1,    NULL, NULL, 2,    'demo: unlimited credit, 2 channels'),
  (5, 'Load Test',       TRUE,   0.00,  NULL, 'USD', 1,    NULL, 1,    NULL, 'demo: for radiusd bench: unlimited credit and channels');

-- Accounts: how each client's calls are recognised.
INSERT INTO accounts (id, client_id, name, ident_by, ani, tech_prefix, password, active, notes, orig_enabled, orig_rate_table_id, orig_routing_plan_id, orig_tag, orig_capacity, term_enabled, term_rate_table_id, term_tag, term_capacity, term_protocol, term_proxy, term_port) VALUES
  (1, 1, 'acme-gw',        'ip',   NULL,          '',     NULL,         TRUE, 'demo: Acme gateways by IP',          TRUE,  NULL, NULL, '', 5,    FALSE, NULL, '', NULL, NULL,  NULL,            NULL),
  (2, 1, 'acme-gw-0099',   'ip',   NULL,          '0099', NULL,         TRUE, 'demo: same IPs, tech prefix 0099',   TRUE,  NULL, NULL, '', NULL, FALSE, NULL, '', NULL, NULL,  NULL,            NULL),
  (3, 1, 'acme-sip',       'name', NULL,          '',     's3cret-pass', TRUE, 'demo: SIP login',                   TRUE,  NULL, NULL, '', NULL, FALSE, NULL, '', NULL, NULL,  NULL,            NULL),
  (4, 1, 'acme-ani',       'ani',  '15551230000', '',     NULL,         TRUE, 'demo: identified by calling number', TRUE,  NULL, NULL, '', NULL, FALSE, NULL, '', NULL, NULL,  NULL,            NULL),
  (5, 2, 'beta-gw',        'ip',   NULL,          '',     NULL,         TRUE, 'demo: Beta gateways by IP',          TRUE,  NULL, NULL, '', NULL, FALSE, NULL, '', NULL, NULL,  NULL,            NULL),
  (6, 3, 'carrier-b-term', 'ip',   NULL,          '',     NULL,         TRUE, 'demo: vendor termination',          FALSE, NULL, NULL, '', NULL, TRUE,  2,    '', 30,   'sip', '198.51.100.20', 5060),
  (7, 4, 'gamma-gw',       'ip',   NULL,          '',     NULL,         TRUE, 'demo: loopback caller, unlimited',   TRUE,  NULL, NULL, '', NULL, FALSE, NULL, '', NULL, NULL,  NULL,            NULL),
  (8, 1, 'acme-v6',        'ip',   NULL,          '',     NULL,         TRUE, 'demo: IPv6 network',                 TRUE,  NULL, NULL, '', NULL, FALSE, NULL, '', NULL, NULL,  NULL,            NULL),
  (9, 5, 'loadtest-sip',   'name', NULL,          '',     'loadtest-pass', TRUE, 'demo: radiusd bench login',       TRUE,  NULL, NULL, '', NULL, FALSE, NULL, '', NULL, NULL,  NULL,            NULL),
  (10, 5, 'loadtest-gw',   'ip',   NULL,          '0077', NULL,         TRUE, 'demo: radiusd bench by IP, tech prefix 0077', TRUE, NULL, NULL, '', NULL, FALSE, NULL, '', NULL, NULL, NULL,     NULL);

INSERT INTO account_networks (id, account_id, cidr, position) VALUES
  (1,  1, '10.1.2.0/24',      0),
  (2,  1, '192.0.2.10/32',    1),
  (3,  2, '10.1.2.0/24',      0),
  (4,  5, '10.9.0.0/16',      0),
  (5,  6, '198.51.100.20/32', 0),
  (6,  7, '127.0.0.1/32',     0),
  (7,  7, '::1/128',          1),
  (8,  8, '2001:db8:1::/48',  0),
  (9, 10, '127.0.0.1/32',     0),
  (10, 10, '::1/128',         1);

-- No account_gateways rows: an account without gateways is valid on every NAS.

INSERT INTO routing_rules (id, routing_plan_id, priority, prefix, terminator_account_id, share) VALUES
  (1, 1, 1, '44', 6, 100),
  (2, 1, 2, '',   6, 100);
