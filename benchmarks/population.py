"""A benchmark population in a radiusd store: clients, IP/CIDR and login accounts, rate tables.

Everything is sized so that authorization accepts, and every called number has a rate. With
`limits=True` (what carriers run, and what the "full function" benchmark rows use) every client
is prepaid with a finite credit (a large balance, credit limit 0) and a channel capacity, and
every tenth account has an account capacity too, so the client lock and the usage read run on
every Access-Request. With `limits=False` clients have unlimited credit and no capacity: the
store is not asked at all (the separate, labelled "no limits" rows). Rows are
written with SQLAlchemy Core `insert()` executemany (one statement per batch), so 100,000
accounts load in seconds on PostgreSQL and the same code fills a small SQLite store in tests.

IP accounts come in groups of four sharing one address or /30, told apart by tech prefixes
9001..9004; login accounts are `bench-login-NNNNNN` with password `pw-NNNNNN`.

From the shell (`--million`: the scale population, 1,000,000 accounts and 1,000,000 rates in
about 2 minutes on PostgreSQL; `benchmarks/scale.py` builds it for its 1M row):

    python3 -m benchmarks.population postgresql://radiusd:radiusd@127.0.0.1/radiusd_scale --million
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from decimal import Decimal

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from radiusd.db import bump_store_version, create_schema, make_engine
from radiusd.models import Account, AccountNetwork, Client, Nas, Rate, RateTable
from radiusd.secrets_at_rest import account_password_place, nas_secret_place, seal
from radiusd.store.sealing import sealing_ring

# Destination bases the rates cover (none starts with 9: that digit starts tech prefixes).
BASES = ("1", "44", "49", "33", "39", "34", "7", "86", "61", "55", "27", "81", "52", "20", "62", "63")
TECH_PREFIXES = ("9001", "9002", "9003", "9004")
IP_BASE = ipaddress.ip_address("10.0.0.0")
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
BATCH = 5000
# With limits: large enough that a benchmark never hits them, small enough to be real numbers.
CLIENT_BALANCE = Decimal(1_000_000)
CLIENT_CAPACITY = 100_000
ACCOUNT_CAPACITY = 10_000
ACCOUNT_CAPACITY_EVERY = 10


@dataclasses.dataclass
class Population:
    accounts: int
    ip_accounts: int
    login_accounts: int
    networks: int
    clients: int
    rate_tables: int
    rates: int
    users: list            # (kind, id, password, called) rows for `radiusd bench --users`
    logins: list           # (login, password) for FreeRADIUS radcheck
    limits: bool           # finite credit and capacity on every client (some accounts too)


def rate_prefixes(per_table: int) -> list[str]:
    """`per_table` distinct prefixes: each base, then base + 3..5 more digits, round robin."""
    prefixes = list(BASES[:per_table])
    width = 3
    i = 0
    while len(prefixes) < per_table:
        for base in BASES:
            if len(prefixes) >= per_table:
                break
            prefixes.append(base + str(i).zfill(width))
        i += 1
        if i >= 10 ** width:
            i, width = 0, width + 1
    return prefixes


def _batches(rows, size=BATCH):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def load_population(database_url: str, *, accounts: int = 100_000, rates: int = 50_000, rate_tables: int = 5,
                    clients: int = 100, login_share: float = 0.5, secret: str = "testing123",
                    nas_addresses: tuple[str, ...] = ("127.0.0.1/32", "::1/128"), engine=None,
                    limits: bool = True) -> Population:
    """Create the schema if needed and add the population; returns counts and the CSV rows."""
    if accounts < 1 or rates < 1 or rate_tables < 1 or clients < 1:
        raise ValueError("accounts, rates, rate_tables and clients must be at least 1")
    if not 0 <= login_share <= 1:
        raise ValueError(f"login_share: {login_share} is not within 0..1")
    own_engine = engine is None
    engine = engine or make_engine(database_url)
    try:
        create_schema(engine)
        with Session(engine) as session:
            ring = sealing_ring(session)  # the store's key file (made if the store has none yet)
        n_login = int(round(accounts * login_share))
        n_ip = accounts - n_login
        per_table = max(1, rates // rate_tables)
        prefixes = rate_prefixes(per_table)
        with engine.begin() as conn:
            # NAS on loopback with the benchmark's secret (kept if already there)
            known = set(conn.scalars(select(Nas.address)))
            nas_rows = [dict(name=f"bench-{i}", address=a, secret=seal(secret, nas_secret_place(f"bench-{i}"), ring),
                             message_authenticator="yes",
                             dialect="cisco", caller_address_source="h323-remote-address", notes="benchmark")
                        for i, a in enumerate(nas_addresses) if a not in known]
            if nas_rows:
                conn.execute(insert(Nas), nas_rows)
            conn.execute(insert(RateTable), [dict(name=f"bench-rt-{t}", currency="USD", notes="benchmark")
                                             for t in range(rate_tables)])
            table_ids = list(conn.scalars(select(RateTable.id).where(RateTable.name.like("bench-rt-%"))
                                          .order_by(RateTable.id)))
            rate_rows = []
            for t, table_id in enumerate(table_ids):
                for j, prefix in enumerate(prefixes):
                    if len(rate_rows) >= rates:
                        break
                    rate_rows.append(dict(
                        rate_table_id=table_id, prefix=prefix, description=f"bench {prefix}",
                        price_per_minute=Decimal(1 + (j + t) % 90) / Decimal(1000),
                        connection_fee=Decimal(0), minimum_seconds=(0, 1, 30, 60)[j % 4],
                        interval_seconds=(1, 6, 60)[j % 3], grace_seconds=0, effective_from=EPOCH,
                        effective_until=None))
            for chunk in _batches(rate_rows):
                conn.execute(insert(Rate), chunk)
            conn.execute(insert(Client), [
                dict(name=f"bench-client-{c}", active=True, balance=CLIENT_BALANCE,
                     credit_limit=Decimal(0) if limits else None, currency="USD",
                     orig_rate_table_id=table_ids[c % len(table_ids)], capacity=CLIENT_CAPACITY if limits else None,
                     notes="benchmark") for c in range(clients)])
            client_ids = list(conn.scalars(select(Client.id).where(Client.name.like("bench-client-%"))
                                           .order_by(Client.id)))
            def account_capacity(i: int) -> int | None:
                return ACCOUNT_CAPACITY if limits and i % ACCOUNT_CAPACITY_EVERY == 0 else None

            account_rows = []
            users = []
            logins = []
            network_of = {}
            for i in range(n_ip):
                group, member = divmod(i, len(TECH_PREFIXES))
                address = IP_BASE + 4 * group
                cidr = f"{address}/30" if group % 2 else f"{address}/32"
                name = f"bench-ip-{i:06d}"
                tech = TECH_PREFIXES[member]
                network_of[name] = cidr
                account_rows.append(dict(client_id=client_ids[i % len(client_ids)], name=name, ident_by="ip",
                                         tech_prefix=tech, password=None, active=True, orig_enabled=True,
                                         orig_capacity=account_capacity(i), notes="benchmark"))
                users.append(("ip", cidr, "", tech + prefixes[i % len(prefixes)]))
            for i in range(n_login):
                name = f"bench-login-{i:06d}"
                password = f"pw-{i:06d}"
                account_rows.append(dict(client_id=client_ids[(i + n_ip) % len(client_ids)], name=name,
                                         ident_by="name", tech_prefix="",
                                         password=seal(password, account_password_place(name), ring), active=True,
                                         orig_enabled=True, orig_capacity=account_capacity(i + n_ip),
                                         notes="benchmark"))
                users.append(("login", name, password, prefixes[i % len(prefixes)]))
                logins.append((name, password))
            # executemany takes its columns from the first row: every row has the same keys
            for chunk in _batches(account_rows):
                conn.execute(insert(Account), chunk)
            ids = dict(conn.execute(select(Account.name, Account.id).where(Account.name.like("bench-ip-%"))).all())
            net_rows = [dict(account_id=ids[name], cidr=cidr, position=0) for name, cidr in network_of.items()]
            for chunk in _batches(net_rows):
                conn.execute(insert(AccountNetwork), chunk)
        with Session(engine) as session, session.begin():
            bump_store_version(session)
        return Population(accounts=accounts, ip_accounts=n_ip, login_accounts=n_login, networks=len(net_rows),
                          clients=clients, rate_tables=len(table_ids), rates=len(rate_rows), users=users,
                          logins=logins, limits=limits)
    finally:
        if own_engine:
            engine.dispose()


MILLION = 1_000_000


def main(argv=None) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Add the benchmark population to a radiusd store.")
    ap.add_argument("database_url")
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--rates", type=int, default=50_000)
    ap.add_argument("--rate-tables", type=int, default=5)
    ap.add_argument("--million", action="store_true", help="1,000,000 accounts and 1,000,000 rates")
    ap.add_argument("--no-limits", action="store_true", help="unlimited credit, no capacity")
    args = ap.parse_args(argv)
    accounts, rates = (MILLION, MILLION) if args.million else (args.accounts, args.rates)
    started = time.perf_counter()
    try:
        pop = load_population(args.database_url, accounts=accounts, rates=rates, rate_tables=args.rate_tables,
                              clients=max(1, accounts // 1000), limits=not args.no_limits)
    except ValueError as exc:
        ap.error(str(exc))
    print(f"{pop.accounts:,} accounts ({pop.ip_accounts:,} by IP, {pop.login_accounts:,} by login), "
          f"{pop.rates:,} rates in {pop.rate_tables} tables, {pop.clients:,} clients: "
          f"{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
