"""Who the generator pretends to be: the demo seed's accounts, or a CSV population.

CSV columns: kind (ip|login), id (IP/CIDR or login), password, called (number prefix, tech
prefix included). A header row starting with `kind` is skipped; `#` lines are comments.
"""
from __future__ import annotations

import csv

from radiusd.bench.wire import LoadAccount

# Matches schema/seeds/demo.sql: client "Load Test" (unlimited credit and channels, retail rates
# 44/4420/1/49) with the login loadtest-sip and the IP account loadtest-gw on 127.0.0.1, picked
# among the loopback accounts by its tech prefix 0077.
DEMO_LOGIN = LoadAccount("login", "loadtest-sip", "loadtest-pass", "4420")
DEMO_IP = LoadAccount("ip", "127.0.0.1", "", "00774420")


def demo_population(mode: str) -> list[LoadAccount]:
    if mode == "auth":
        return [DEMO_LOGIN, DEMO_IP]
    return [DEMO_LOGIN]


def load_users(path: str, kinds: tuple[str, ...] = ("ip", "login")) -> list[LoadAccount]:
    """Read a population CSV; raises ValueError naming the line and field of bad input."""
    accounts = []
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() == "kind":
                continue
            row = [c.strip() for c in row] + [""] * (4 - len(row))
            kind, ident, password, called = row[:4]
            try:
                acc = LoadAccount(kind, ident, password, called or "44")
            except ValueError as exc:
                raise ValueError(f"{path} line {lineno}: {exc}") from None
            if kind in kinds:
                accounts.append(acc)
    if not accounts:
        raise ValueError(f"{path}: no {'/'.join(kinds)} accounts")
    return accounts


def write_users(path: str, rows) -> int:
    """Write (kind, id, password, called) rows as a population CSV; returns the row count."""
    n = 0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["kind", "id", "password", "called"])
        for row in rows:
            w.writerow(row)
            n += 1
    return n
