"""Take the README's screenshots of the web admin: demo data plus an hour of made-up traffic.

    python3 docs/screenshots/make_screenshots.py        # writes docs/screenshots/*.png

Uses Debian's chromium through Playwright (as the browser tests do) and a throwaway SQLite store.
"""
from __future__ import annotations

import datetime as dt
import random
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from playwright.sync_api import sync_playwright  # noqa: E402

from radius_server import seeded_store  # noqa: E402
from radiusd.admin import accounts, users  # noqa: E402
from radiusd.db import open_store  # noqa: E402
from radiusd.models import ActiveCall, Cdr  # noqa: E402
from web_site import CHROMIUM_ARGS, WebProcess, chromium_path  # noqa: E402

PASSWORD = "screenshot-pass"
SHOTS = [
    ("dashboard.png", "/", None),
    ("accounts.png", "/accounts", "#advanced summary"),
    ("account-form.png", "/accounts/3", None),
    ("clients.png", "/clients", None),
    ("client.png", "/clients/1", None),
    ("rate-table.png", "/rate-tables/1", None),
    ("cdrs.png", "/cdrs", None),
    ("audit.png", "/audit", None),
]


def traffic(sessions, now: dt.datetime) -> None:
    """An hour of CDRs for the demo's customers and a few calls in progress."""
    rng = random.Random(7)
    legs = [(1, 3, "4420"), (1, 1, "44"), (2, 5, "1"), (4, 7, "49"), (1, 4, "1")]
    prices = {"4420": Decimal("0.015"), "44": Decimal("0.02"), "1": Decimal("0.01"), "49": Decimal("0.03")}
    with sessions.begin() as s:
        for n in range(260):
            client_id, account_id, prefix = rng.choice(legs)
            end = now - dt.timedelta(seconds=rng.randint(5, 3590))
            answered = rng.random() < 0.62
            seconds = rng.randint(8, 420) if answered else 0
            cost = (prices[prefix] * seconds / 60).quantize(Decimal("0.000001"))
            s.add(Cdr(leg_key=f"shot:{n}", call_id=f"shot-{n:04d}", nas_id=1, leg="orig", account_id=account_id,
                      client_id=client_id, caller="15551230001", called=prefix + str(rng.randint(1000000, 9999999)),
                      connect_time=end - dt.timedelta(seconds=seconds) if answered else None,
                      setup_time=end - dt.timedelta(seconds=seconds + 3), disconnect_time=end, duration=seconds,
                      billed_seconds=seconds, result="success" if answered else rng.choice(["busy", "no_channel"]),
                      disconnect_cause="10" if answered else "11", rate_table_id=1, prefix=prefix,
                      price_per_minute=prices[prefix], cost=cost, currency="USD"))
        for n in range(3):
            started = now - dt.timedelta(seconds=40 * (n + 1))
            s.add(ActiveCall(leg_key=f"shot-open:{n}", call_id=f"open-{n}", nas_id=1, leg="orig", state="active",
                             account_id=3, client_id=1, caller="15551230001", called="442071234567",
                             rate_table_id=1, prefix="4420", max_duration=7200, created_at=started,
                             started_at=started, last_seen_at=now, session_seconds=40 * (n + 1)))
        accounts.update_account(s, 3, actor="alice", context="web", orig_capacity="20", notes="SIP trunk, NYC office")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="radiusd-shots-"))
    url = f"sqlite:///{tmp / 'shots.sqlite3'}"
    seeded_store(url)
    engine, sessions = open_store(url)
    with sessions.begin() as s:
        users.add_user(s, "alice", PASSWORD, "admin", "demo", "cli")
    traffic(sessions, dt.datetime.now(dt.timezone.utc))
    engine.dispose()
    web = WebProcess(url, tmp).wait_ready()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 820})
            page.goto(web.base + "/login")
            page.fill("input[name=name]", "alice")
            page.fill("input[name=password]", PASSWORD)
            page.click("form.login button[type=submit]")
            page.wait_for_selector("header.top")
            for name, path, click in SHOTS:
                page.goto(web.base + path)
                if click:
                    page.click(click)
                page.screenshot(path=str(HERE / name), full_page=True)
                print("wrote", HERE / name)
            browser.close()
    finally:
        web.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
