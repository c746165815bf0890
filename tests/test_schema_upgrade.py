"""schema/upgrades/: a PostgreSQL store made before issue 9 becomes exactly the current schema,
its NAS keep the Message-Authenticator behaviour they had, their clear secrets get sealed, and the
usage counters (issue 12) start from the legs already open."""
from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from radiusd.cli import main
from radiusd.db import make_sessionmaker
from radiusd.models import Base
from radiusd.store.snapshot_loader import load_snapshot_from

ROOT = Path(__file__).resolve().parent.parent
UPGRADES = sorted((ROOT / "schema" / "upgrades").glob("*.sql"))  # each once, in name order

# the schema as it was before: one boolean column, no per-client/account max call duration
BEFORE = """
ALTER TABLE nas DROP CONSTRAINT ck_nas_message_authenticator_policy_known;
ALTER TABLE nas DROP COLUMN message_authenticator;
ALTER TABLE nas DROP COLUMN message_authenticator_seen_at;
ALTER TABLE nas ADD COLUMN require_message_authenticator BOOLEAN DEFAULT true NOT NULL;
ALTER TABLE clients DROP COLUMN max_call_duration;
ALTER TABLE accounts DROP COLUMN max_call_duration;
ALTER TABLE nas ALTER COLUMN secret TYPE VARCHAR(256);
ALTER TABLE accounts ALTER COLUMN password TYPE VARCHAR(256);
ALTER TABLE active_calls ADD CONSTRAINT fk_active_calls_nas_id_nas FOREIGN KEY(nas_id) REFERENCES nas (id) ON DELETE SET NULL;
ALTER TABLE active_calls ADD CONSTRAINT fk_active_calls_rate_table_id_rate_tables FOREIGN KEY(rate_table_id)
    REFERENCES rate_tables (id) ON DELETE SET NULL;
CREATE INDEX ix_active_calls_call_id ON active_calls (call_id, leg);
ALTER TABLE cdrs ADD CONSTRAINT fk_cdrs_nas_id_nas FOREIGN KEY(nas_id) REFERENCES nas (id) ON DELETE SET NULL;
ALTER TABLE cdrs ADD CONSTRAINT fk_cdrs_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE SET NULL;
ALTER TABLE cdrs ADD CONSTRAINT fk_cdrs_client_id_clients FOREIGN KEY(client_id) REFERENCES clients (id) ON DELETE SET NULL;
ALTER TABLE cdrs ADD CONSTRAINT fk_cdrs_rate_table_id_rate_tables FOREIGN KEY(rate_table_id)
    REFERENCES rate_tables (id) ON DELETE SET NULL;
CREATE INDEX ix_cdrs_leg_key ON cdrs (leg_key);
INSERT INTO nas (id, name, address, secret, require_message_authenticator)
    VALUES (1, 'cisco-gw', '192.0.2.1/32', 's1', true), (2, 'kamailio', '192.0.2.2/32', 's2', false);
INSERT INTO clients (id, name, credit_limit) VALUES (1, 'Acme', 0);
DROP TRIGGER radiusd_usage_insert ON active_calls;
DROP TRIGGER radiusd_usage_update ON active_calls;
DROP TRIGGER radiusd_usage_delete ON active_calls;
DROP TRIGGER radiusd_usage_truncate ON active_calls;
DROP FUNCTION radiusd_usage_inserted(), radiusd_usage_updated(), radiusd_usage_deleted(), radiusd_usage_truncated(),
    radiusd_usage_add(INTEGER[], INTEGER[], INTEGER[], NUMERIC[]);
DROP INDEX ix_active_calls_client_reserved_expiry;
ALTER TABLE clients DROP COLUMN open_calls;
ALTER TABLE clients DROP COLUMN money_held;
DROP TABLE account_usage;
INSERT INTO accounts (id, client_id, name, ident_by) VALUES (1, 1, 'acme-gw', 'ip');
INSERT INTO active_calls (leg_key, call_id, leg, state, account_id, client_id, max_cost, created_at, last_seen_at)
    VALUES ('k1', 'c1', 'orig', 'active', 1, 1, 0.5, now(), now()),
           ('k2', 'c2', 'orig', 'reserved', 1, 1, 0.25, now(), now()),
           ('k3', 'c3', 'term', 'active', 1, 1, 9, now(), now());
"""


def _psql(url: str, *args: str) -> None:
    psql = shutil.which("psql")
    if not psql:
        pytest.fail("psql (PostgreSQL client) is required to load schema/ into PostgreSQL")
    done = subprocess.run([psql, url.replace("postgresql+psycopg2://", "postgresql://"), "-v", "ON_ERROR_STOP=1",
                           "-q", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0, done.stderr


def _shape(engine) -> dict:
    db = inspect(engine)
    shape = {
        name: ({c["name"]: (str(c["type"]), c["nullable"]) for c in db.get_columns(name)},
               {c["name"] for c in db.get_check_constraints(name)})
        for name in ("nas", "clients", "accounts", "account_usage") if db.has_table(name)
    }
    # the hot tables: only the foreign keys and indexes the current schema has
    for name in ("active_calls", "cdrs", "cdrs_default"):
        shape[name] = ({k["name"] for k in db.get_foreign_keys(name)}, {i["name"] for i in db.get_indexes(name)})
    with engine.connect() as conn:   # the usage triggers and their functions, as PostgreSQL prints them
        shape["triggers"] = set(conn.exec_driver_sql(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'active_calls'::regclass"
            " AND NOT tgisinternal").scalars())
        shape["functions"] = set(conn.exec_driver_sql(
            "SELECT pg_get_functiondef(oid) FROM pg_proc WHERE starts_with(proname, 'radiusd_usage')").scalars())
    return shape


def _usage(engine) -> tuple:
    with engine.connect() as conn:
        return (conn.exec_driver_sql("SELECT open_calls, money_held FROM clients WHERE id = 1").one(),
                conn.exec_driver_sql("SELECT open_calls FROM account_usage WHERE account_id = 1").scalar())


def test_upgrade_turns_the_old_schema_into_the_current_one(pg_url, tmp_path):
    _psql(pg_url, "-f", str(ROOT / "schema" / "postgresql.sql"))
    engine = create_engine(pg_url)
    try:
        current = _shape(engine)
        assert len(current["triggers"]) == 4 and len(current["functions"]) == 5   # usage counters
        (tmp_path / "before.sql").write_text(BEFORE)
        _psql(pg_url, "-f", str(tmp_path / "before.sql"))
        assert _shape(engine) != current
        for upgrade in UPGRADES:
            _psql(pg_url, "-f", str(upgrade))
        assert _shape(engine) == current
        # the counters start from the legs open before the upgrade (the term leg does not count)
        assert _usage(engine) == ((2, Decimal("0.750000")), 2)
        _psql(pg_url, "-f", str(ROOT / "schema" / "upgrades" / "2026-12-usage-counters.sql"))   # again: no change
        assert _shape(engine) == current and _usage(engine) == ((2, Decimal("0.750000")), 2)
        with engine.begin() as conn:   # from now on the triggers keep them
            conn.exec_driver_sql("DELETE FROM active_calls WHERE leg_key = 'k1'")
        assert _usage(engine) == ((1, Decimal("0.250000")), 1)
        assert set(current["nas"][0]) == set(Base.metadata.tables["nas"].columns.keys())
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM store_version")).scalar() == 1
        # the clear NAS secrets of the old store are sealed in place (README: Secrets at rest)
        assert main(["--database-url", pg_url, "secrets", "seal-existing"]) == 0
        with engine.connect() as conn:
            assert all(v.startswith("rs1:") for v in conn.execute(text("SELECT secret FROM nas")).scalars())
        snapshot = load_snapshot_from(make_sessionmaker(engine))
        assert {n.name: (n.message_authenticator, n.message_authenticator_learned)
                for n in snapshot.nas.values()} == {"cisco-gw": ("yes", False), "kamailio": ("no", False)}
        assert snapshot.clients[1].max_call_duration is None
    finally:
        engine.dispose()
