"""The benchmark population loader, small sizes, on SQLite and PostgreSQL."""
from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import func, select

from radiusd.bench.population import load_users, write_users
from radiusd.db import current_store_version, make_sessionmaker
from radiusd.models import Account, AccountNetwork, Client, Nas, Rate, RateTable
from radiusd.secrets_at_rest import account_password_place, load_key_file, open_sealed
from radiusd.store.sealing import key_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.population import load_population, rate_prefixes  # noqa: E402


def test_population_rows_counted(store_url, tmp_path):
    pop = load_population(store_url, accounts=200, rates=150, rate_tables=3, clients=7, login_share=0.2)
    from radiusd.db import make_engine

    engine = make_engine(store_url)
    try:
        with make_sessionmaker(engine)() as s:
            count = lambda model: s.scalar(select(func.count()).select_from(model))  # noqa: E731
            assert count(Account) == 200
            assert s.scalar(select(func.count()).where(Account.ident_by == "name")) == 40
            assert count(AccountNetwork) == 160           # one network per IP account
            assert count(Client) == 7 and count(RateTable) == 3
            assert count(Rate) == 150
            assert count(Nas) == 2
            # limits as carriers run them: every client prepaid (credit limit 0) with a capacity,
            # every tenth account with an account capacity
            assert s.scalar(select(func.count()).where(Client.credit_limit == 0)) == 7
            assert s.scalar(select(func.count()).where(Client.capacity.is_not(None))) == 7
            assert s.scalar(select(func.count()).where(Account.orig_capacity.is_not(None))) == 20
            assert current_store_version(s) >= 1
            # the password FreeRADIUS gets in radcheck is the one the account holds
            login, password = pop.logins[7]
            stored = s.scalar(select(Account.password).where(Account.name == login))
            assert stored != password and password not in stored  # sealed in the store
            assert open_sealed(stored, account_password_place(login), load_key_file(key_path(s))) == password
            # four IP accounts share a network, told apart by tech prefix
            shared = s.execute(select(AccountNetwork.cidr, func.count()).group_by(AccountNetwork.cidr)).all()
            assert {n for _, n in shared} == {4} and len(shared) == 40
    finally:
        engine.dispose()
    assert pop.accounts == 200 and pop.login_accounts == 40 and pop.rates == 150
    assert len(pop.logins) == 40 and len(pop.users) == 200
    # the CSV the generator reads back
    path = tmp_path / "users.csv"
    write_users(str(path), pop.users)
    assert len(load_users(str(path))) == 200
    assert len(load_users(str(path), ("login",))) == 40


def test_rate_prefixes_are_distinct_and_avoid_tech_prefix_digit():
    prefixes = rate_prefixes(10_000)
    assert len(set(prefixes)) == 10_000
    assert not any(p.startswith("9") for p in prefixes)


def test_population_without_limits_leaves_credit_and_capacity_open(store_url):
    pop = load_population(store_url, accounts=40, rates=20, rate_tables=1, clients=3, limits=False)
    from radiusd.db import make_engine

    engine = make_engine(store_url)
    try:
        with make_sessionmaker(engine)() as s:
            assert s.scalar(select(func.count()).where(Client.credit_limit.is_not(None))) == 0
            assert s.scalar(select(func.count()).where(Client.capacity.is_not(None))) == 0
            assert s.scalar(select(func.count()).where(Account.orig_capacity.is_not(None))) == 0
    finally:
        engine.dispose()
    assert pop.limits is False
