"""Monthly CDR partitions on PostgreSQL, and one CDR per leg whatever partition it lands in."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import text, update
from structlog.testing import capture_logs

from radiusd.admin.accounts import delete_account
from radiusd.config import PROJECT_ROOT, ConfigError, Settings, load_settings
from radiusd.db import create_schema, make_engine, make_sessionmaker
from radiusd.models import Cdr, CdrLeg, Client
from radiusd.store.accounting import apply
from radiusd.store.partitions import default_partition_rows, ensure_cdr_partitions, move_default_rows
from radiusd.store.sweeper import sweep
from test_accounting_support import CUSTOMER_IP, acct, balance, cdrs, feed, seed, snapshot_of

UTC = dt.timezone.utc
NOV = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DEC = dt.datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
S = dt.timedelta(seconds=1)
SETTINGS = Settings(reservation_ttl=30, stale_call_after=600)


@pytest.fixture
def pg(pg_url):
    engine = make_engine(pg_url)
    create_schema(engine)
    yield engine, make_sessionmaker(engine)
    engine.dispose()


def stop(ids, sid: str, at: dt.datetime, seconds: int = 60, **kw):
    """A Cisco Stop of the customer's leg (acme-gw: 0.10/min, minimum 30 s, interval 6 s)."""
    return acct(ids["gw-a"], "stop", sid, call_id=f"conf-{sid}", caller_address=CUSTOMER_IP,
                calling_number="15551230000", called_number="441612345678", event_time=at, disconnect_time=at,
                connect_time=at - seconds * S, session_time=seconds, disconnect_cause="10", **kw)


def placement(engine) -> dict[str, str]:
    """leg key -> the partition (table) its CDR row is stored in."""
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT leg_key, tableoid::regclass::text FROM cdrs")).all())


def partitions(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'cdrs'::regclass")).scalars())


def test_cdrs_of_two_months_land_in_their_monthly_partitions(pg):
    engine, sessions = pg
    report = ensure_cdr_partitions(engine, NOV, months_ahead=1)
    assert report.created == ["cdrs_2026_11", "cdrs_2026_12"]
    assert partitions(engine) == {"cdrs_default", "cdrs_2026_11", "cdrs_2026_12"}
    ids = seed(sessions)
    snap = snapshot_of(sessions)
    feed(sessions, snap, stop(ids, "nov-1", NOV))
    feed(sessions, snap, stop(ids, "dec-1", DEC))
    feed(sessions, snap, stop(ids, "far-1", dt.datetime(2027, 6, 1, tzinfo=UTC)))  # no partition yet
    key = f"{ids['gw-a']}:"
    assert placement(engine) == {key + "nov-1": "cdrs_2026_11", key + "dec-1": "cdrs_2026_12",
                                 key + "far-1": "cdrs_default"}
    # the CDRs read back through the parent as usual, each debited once (60 s at 0.10/min)
    assert [r.cost for r in cdrs(sessions)] == [Decimal("0.100000")] * 3
    assert balance(sessions, ids["acme"]) == Decimal("99.700000")


def test_same_stop_three_times_gives_one_cdr_on_both_stores(store_url):
    engine = make_engine(store_url)
    try:
        create_schema(engine)
        ensure_cdr_partitions(engine, NOV, months_ahead=1)  # no-op on SQLite
        sessions = make_sessionmaker(engine)
        ids = seed(sessions)
        snap = snapshot_of(sessions)
        for _ in range(3):
            feed(sessions, snap, stop(ids, "dup-1", NOV))
        [row] = cdrs(sessions)
        assert row.cost == Decimal("0.100000") and balance(sessions, ids["acme"]) == Decimal("99.900000")
        with sessions() as s:
            [leg] = s.query(CdrLeg).all()
        assert (leg.leg_key, leg.cdr_id, leg.disconnect_time) == (row.leg_key, row.id, NOV)
    finally:
        engine.dispose()


def test_a_leg_closed_in_one_month_stays_closed_when_its_stop_says_next_month(pg):
    """Stale-closed at the end of November, the real Stop then reports a December disconnect:
    a unique key on (leg_key, disconnect_time) would let a second CDR into December; cdr_legs does not."""
    engine, sessions = pg
    ensure_cdr_partitions(engine, NOV, months_ahead=1)
    ids = seed(sessions)
    snap = snapshot_of(sessions)
    started = dt.datetime(2026, 11, 30, 23, 40, tzinfo=UTC)
    feed(sessions, snap, acct(ids["gw-a"], "start", "late-1", call_id="conf-late-1", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=started, connect_time=started))
    assert sweep(sessions, started + 700 * S, SETTINGS)["stale_calls"] == 1
    for _ in range(3):
        feed(sessions, snap, stop(ids, "late-1", dt.datetime(2026, 12, 1, 0, 20, tzinfo=UTC), seconds=2400))
    assert list(placement(engine).values()) == ["cdrs_2026_11"]
    assert len(cdrs(sessions)) == 1


def test_concurrent_duplicate_stops_write_one_cdr(pg):
    """Two servers get the same Stop at the same moment (retransmission to both): one CDR, one debit."""
    engine, sessions = pg
    ensure_cdr_partitions(engine, NOV, months_ahead=0)
    ids = seed(sessions)
    snap = snapshot_of(sessions)
    packet = stop(ids, "race-1", NOV)
    barrier = threading.Barrier(4)
    outcomes, errors = [], []

    def apply_once():
        try:
            with sessions() as s, s.begin():
                barrier.wait(5)
                outcomes.append(apply(s, packet, snap, NOV).action)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=apply_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(outcomes) == ["closed", "duplicate", "duplicate", "duplicate"]
    assert len(cdrs(sessions)) == 1 and balance(sessions, ids["acme"]) == Decimal("99.900000")


def test_sweeper_skips_a_month_whose_cdrs_sit_in_default_and_move_default_moves_them(pg):
    engine, sessions = pg
    ids = seed(sessions)
    snap = snapshot_of(sessions)
    # a fresh store: no monthly partition yet, so November's CDRs go to the default partition
    for n in range(3):
        feed(sessions, snap, stop(ids, f"early-{n}", NOV + n * S))
    assert set(placement(engine).values()) == {"cdrs_default"}
    with capture_logs() as logged:
        report = ensure_cdr_partitions(engine, NOV, months_ahead=2)
    # the months ahead are made; November is left alone: attaching it would lock the default
    # partition under traffic for as long as its rows take to move
    assert report.created == ["cdrs_2026_12", "cdrs_2027_01"] and report.moved == {}
    assert list(report.skipped) == ["cdrs_2026_11"] and "3 CDRs" in report.skipped["cdrs_2026_11"]
    assert "--move-default" in report.skipped["cdrs_2026_11"]
    assert [(e["event"], e["partition"], e["rows_in_default"]) for e in logged if e["log_level"] == "warning"] == [
        ("cdr_partition_skipped", "cdrs_2026_11", 3)]
    assert set(placement(engine).values()) == {"cdrs_default"} and default_partition_rows(engine) == 3
    # the explicit command moves them, in one transaction for the month
    moved = move_default_rows(engine)
    assert moved.created == ["cdrs_2026_11"] and moved.moved == {"cdrs_2026_11": 3} and moved.in_default == {}
    assert set(placement(engine).values()) == {"cdrs_2026_11"} and default_partition_rows(engine) == 0
    again = ensure_cdr_partitions(engine, NOV + dt.timedelta(days=5), months_ahead=2)
    assert again.created == [] and again.present == ["cdrs_2026_11", "cdrs_2026_12", "cdrs_2027_01"]
    # the moved CDRs are still known: their Stops replayed change nothing
    feed(sessions, snap, stop(ids, "early-0", NOV))
    assert len(cdrs(sessions)) == 3 and balance(sessions, ids["acme"]) == Decimal("99.700000")
    # a month past the ones created lands in default, is skipped when its turn comes, moved on demand
    february = dt.datetime(2027, 2, 14, tzinfo=UTC)
    feed(sessions, snap, stop(ids, "feb-1", february))
    later = ensure_cdr_partitions(engine, dt.datetime(2027, 1, 31, 23, 0, tzinfo=UTC), months_ahead=1)
    assert later.created == [] and list(later.skipped) == ["cdrs_2027_02"]
    only = move_default_rows(engine, month=february)
    assert only.created == ["cdrs_2027_02"] and only.moved == {"cdrs_2027_02": 1}
    assert placement(engine)[f"{ids['gw-a']}:feb-1"] == "cdrs_2027_02"
    assert move_default_rows(engine).created == []   # nothing left: nothing done


@pytest.mark.parametrize("how", ["sweeper", "move-default"])
def test_attaching_a_partition_never_waits_for_an_accounting_transaction(pg, how):
    """ATTACH PARTITION locks the default partition and the tables the CDR foreign keys point to.
    With keys to `clients`, an accounting transaction that debited a client (holds `clients`)
    and then inserts a CDR into the default partition closed a deadlock cycle with it. The CDRs
    have no foreign keys now (radiusd.models.Cdr): the partition is made while the accounting
    transaction still holds its client, which then writes its CDR and commits."""
    engine, sessions = pg
    ids = seed(sessions)
    if how == "move-default":   # November's CDRs wait in the default partition for the command
        feed(sessions, snapshot_of(sessions), stop(ids, "nov-1", NOV))
    outcome = {}
    accounting = sessions()
    accounting.begin()
    accounting.execute(update(Client).where(Client.id == ids["acme"]).values(balance=Client.balance - 1))

    def make_partition():
        try:
            if how == "sweeper":
                outcome["report"] = ensure_cdr_partitions(engine, NOV, months_ahead=0, attempts=10)
            else:
                outcome["report"] = move_default_rows(engine, month=NOV, attempts=10)
        except Exception as exc:  # the test fails below, naming it
            outcome["error"] = repr(exc)

    maker = threading.Thread(target=make_partition)
    maker.start()
    try:
        maker.join(60)
        assert not maker.is_alive(), "the partition waited for the accounting transaction"
        # the accounting transaction goes on: a CDR for a month without partition (default)
        accounting.add(Cdr(leg_key="x:late", call_id="late", leg="orig", result="success", client_id=ids["acme"],
                           disconnect_time=dt.datetime(2030, 1, 5, tzinfo=UTC)))
        accounting.commit()
    finally:
        accounting.close()
        maker.join(60)
    assert "error" not in outcome, outcome
    assert outcome["report"].created == ["cdrs_2026_11"]
    assert placement(engine)["x:late"] == "cdrs_default"
    if how == "move-default":
        assert outcome["report"].moved == {"cdrs_2026_11": 1}
        assert placement(engine)[f"{ids['gw-a']}:nov-1"] == "cdrs_2026_11"
    else:
        assert balance(sessions, ids["acme"]) == Decimal("99")


def test_two_hosts_creating_partitions_at_once_create_each_once(pg):
    engine, _ = pg
    reports, errors = [], []

    def run():
        try:
            reports.append(ensure_cdr_partitions(engine, NOV, months_ahead=3))
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    created = sorted(name for r in reports for name in r.created)
    assert created == ["cdrs_2026_11", "cdrs_2026_12", "cdrs_2027_01", "cdrs_2027_02"]
    assert partitions(engine) == {"cdrs_default", *created}


def test_sweeper_keeps_partitions_ahead(pg):
    engine, sessions = pg
    assert sweep(sessions, DEC, SETTINGS)["cdr_partitions_skipped"] == 0
    assert partitions(engine) == {"cdrs_default", "cdrs_2026_12", "cdrs_2027_01", "cdrs_2027_02"}
    sweep(sessions, DEC, replace(SETTINGS, cdr_partitions_ahead=4))   # [database] cdr_partitions_ahead
    assert partitions(engine) >= {"cdrs_2027_03", "cdrs_2027_04"}


def test_sweeper_counts_a_month_it_leaves_to_move_default(pg):
    engine, sessions = pg
    ids = seed(sessions)
    feed(sessions, snapshot_of(sessions), stop(ids, "jan-1", dt.datetime(2027, 1, 2, tzinfo=UTC)))
    assert sweep(sessions, DEC, SETTINGS)["cdr_partitions_skipped"] == 1
    assert partitions(engine) == {"cdrs_default", "cdrs_2026_12", "cdrs_2027_02"}


def test_cdr_partitions_ahead_setting_is_checked(tmp_path):
    config = tmp_path / "radiusd.toml"
    config.write_text("[database]\ncdr_partitions_ahead = 3\n")
    assert load_settings(config).cdr_partitions_ahead == 3
    config.write_text("[database]\ncdr_partitions_ahead = 0\n")
    with pytest.raises(ConfigError, match="cdr_partitions_ahead: 0 must be 1 to 120"):
        load_settings(config)


def test_deleted_account_late_stop_stays_a_no_op(store_url):
    """Deleting an account deletes its CDRs (refunded) but keeps their leg keys: a late
    retransmitted Stop of such a call must not write the CDR (and debit) again."""
    engine = make_engine(store_url)
    try:
        create_schema(engine)
        sessions = make_sessionmaker(engine)
        ids = seed(sessions)
        snap = snapshot_of(sessions)
        feed(sessions, snap, stop(ids, "gone-1", NOV))
        with sessions() as s, s.begin():
            assert delete_account(s, "acme-gw", actor="test")["cdrs_deleted"] == 1
        assert balance(sessions, ids["acme"]) == Decimal("100.000000")
        feed(sessions, snap, stop(ids, "gone-1", NOV))  # the old snapshot still knows acme-gw
        assert cdrs(sessions) == [] and balance(sessions, ids["acme"]) == Decimal("100.000000")
    finally:
        engine.dispose()


def test_sqlite_store_is_not_partitioned(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        create_schema(engine)
        report = ensure_cdr_partitions(make_sessionmaker(engine), NOV)
        assert not report.partitioned and report.created == []
    finally:
        engine.dispose()


def _radiusd(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radiusd", "db", "partitions", *args, "--database-url", url],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, stdin=subprocess.DEVNULL)


def test_cli_db_partitions(pg_url):
    now = dt.datetime.now(UTC)
    this_month = f"cdrs_{now.year:04d}_{now.month:02d}"
    first = _radiusd(pg_url, "--months-ahead", "1", "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["partitioned"] and out["default_partition_rows"] == 0
    assert len(out["partitions"]) == 2 and out["partitions"][0]["partition"] == this_month
    assert {p["status"] for p in out["partitions"]} == {"created"}
    second = _radiusd(pg_url, "--months-ahead", "1")
    assert second.returncode == 0 and "present" in second.stdout and "created" not in second.stdout
    bad = _radiusd(pg_url, "--months-ahead", "-3")
    assert bad.returncode == 2 and bad.stderr.startswith("radiusd: error: months-ahead:")


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radiusd", *args, "--database-url", url], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=120, stdin=subprocess.DEVNULL)


def _month_names(count: int) -> list[str]:
    start = dt.datetime.now(UTC)
    months = [dt.datetime(start.year, start.month, 1, tzinfo=UTC)]
    while len(months) < count:
        last = months[-1]
        months.append(last.replace(year=last.year + 1, month=1) if last.month == 12 else last.replace(month=last.month + 1))
    return [f"cdrs_{m.year:04d}_{m.month:02d}" for m in months]


def test_db_init_creates_this_and_next_months_partitions(pg_url):
    out = _cli(pg_url, "db", "init", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cdr_partitions"] == _month_names(2)
    engine = make_engine(pg_url)
    try:
        assert partitions(engine) == {"cdrs_default", *_month_names(2)}
    finally:
        engine.dispose()
    text_out = _cli(pg_url, "db", "init")
    assert text_out.returncode == 0 and f"CDR partitions: {', '.join(_month_names(2))}" in text_out.stdout


def test_cli_move_default_moves_rows_month_by_month(pg):
    engine, sessions = pg
    ids = seed(sessions)
    snap = snapshot_of(sessions)
    feed(sessions, snap, stop(ids, "old-1", dt.datetime(2025, 3, 9, tzinfo=UTC)))   # an old spool replayed
    feed(sessions, snap, stop(ids, "old-2", dt.datetime(2025, 4, 9, tzinfo=UTC)))
    feed(sessions, snap, stop(ids, "old-3", dt.datetime(2025, 4, 10, tzinfo=UTC)))
    url = engine.url.render_as_string(hide_password=False)
    out = _cli(url, "db", "partitions", "--move-default", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["partitions"] == [
        {"partition": "cdrs_2025_03", "status": "created", "moved_from_default": 1},
        {"partition": "cdrs_2025_04", "status": "created", "moved_from_default": 2}]
    assert result["default_partition_rows"] == 0
    assert set(placement(engine).values()) == {"cdrs_2025_03", "cdrs_2025_04"}
    again = _cli(url, "db", "partitions", "--move-default")
    assert again.returncode == 0 and "cdrs_default: nothing to move" in again.stdout


def test_cli_partitions_on_sqlite_says_there_are_none(sqlite_url):
    assert _cli(sqlite_url, "db", "init").returncode == 0
    for args in ((), ("--move-default",)):
        out = _cli(sqlite_url, "db", "partitions", *args)
        assert out.returncode == 0, out.stderr
        assert "SQLite store: CDRs are not partitioned (PostgreSQL only), nothing to do" in out.stdout
