"""Accounting: Accounting-Requests -> active calls, rated CDRs and client balances.

`apply(session, facts, snapshot, now)` applies one leg event inside a transaction the caller owns
(radiusd.store.accounting_writer groups many per transaction). Every event is idempotent, keyed
by the leg key (NAS + Acct-Session-Id [+ Acct-Unique-Session-Id]), so that retransmissions,
duplicates through several servers and spool replays change nothing the second time:

- Start opens an active call. For the originating leg it takes over the reservation made at
  Access-Accept for the same call id on that NAS (the row is re-keyed, so it keeps counting once);
  without one it identifies the account like authorization does and still opens the call (in
  accounting nothing can be refused: the call exists). A Start for a leg whose CDR exists is
  ignored (Stop-then-Start leaves no open call); a repeated Start changes nothing.
- Interim-Update refreshes last-seen and the running duration; it opens the call when the Start
  was lost (start = event - Acct-Session-Time); after the Stop it is ignored.
- Stop writes the CDR (the leg key is claimed in `cdr_legs` first: a repeated Stop finds it and
  changes nothing, in whichever monthly partition the CDR lies), deletes the
  active call and, for an originating leg, debits the client's balance by the CDR cost in the
  same transaction. Stop without Start yields exactly one CDR. Failed (Acct-Status-Type 15) and
  zero-length legs close without charge.
- Accounting-On/Off closes every open call of that NAS (CDR at the On/Off time, cause
  'NAS-Reboot') and drops its reservations. The sweeper closes stale calls the same way.

Legs and money:
- orig (answer/incoming) legs bill the originator account: the reservation's account, else
  identification as at Access-Request; rated with the account's orig rate table, else its
  client's; the client's balance is debited.
- term (originate/outgoing) legs are matched to a terminator account by remote address and
  protocol/port; the vendor cost is rated with the terminator's term rate table, else its
  client's, and recorded on the CDR for margin reporting. It moves no balance: neither the
  originator's (the customer pays the orig leg only) nor the vendor's (vendor invoices are
  reconciled outside radiusd). While open, term legs count against the terminator's capacity.
- A leg whose account is unknown (e.g. the VoIP legs between a carrier's own gateways) is still
  recorded: CDR with no account, no rate, cost 0. Unrated legs (no rate effective at the connect
  time) are flagged by `price_per_minute IS NULL` with duration > 0, and logged.
- All legs of one call share `call_id` (h323-conf-id / call-id / SIP Call-ID): that is the link.

Closing without a Stop (NAS reboot, stale, removed by hand): the duration charged is what is
proven — the longer of the last Interim's Acct-Session-Time and last-seen - start — never the
time until we noticed (a NAS down for hours must not bill hours nobody talked). A call removed by
hand is charged like a Stop now: now - start.

Money: costs follow radiusd.core.rating (billed = minimum then whole intervals, grace free,
cost = fee + price * billed / 60 rounded half-up to 6 places once); the sum of orig-leg CDR costs
equals the total change of client balances.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass
from decimal import Decimal

import structlog
from sqlalchemy import bindparam, delete, insert, or_, select, text
from sqlalchemy.orm import Session

from radiusd.core import legs
from radiusd.core.causes import describe
from radiusd.core.facts import AcctFacts
from radiusd.core.legs import LegCharge, charge_leg, leg_duration, strip_tech_prefix
from radiusd.core.snapshot import AccountInfo, RateTableInfo, Snapshot, build_rate_table
from radiusd.core.snapshot import Rate as RateInfo
from radiusd.models import ActiveCall, Cdr, CdrLeg, Client, Money, Rate, RateTable
from radiusd.store.capacity import reservation_key

log = structlog.get_logger("radiusd.accounting")

STATUSES = ("start", "interim", "stop", "failed", "on", "off")
NAS_REBOOT = "NAS-Reboot"
STALE = "stale"
MANUAL = "manual"
KEY_SIZE = 255  # leg_key / call_id / acct_session_id column size


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one accounting event did (for logs, counters and tests)."""
    action: str          # opened | took_over | updated | closed | duplicate | ignored | nas_reset
    cdrs: int = 0        # CDRs written by this event
    debited: Decimal = Decimal(0)
    detail: str = ""


# -- where rates and currencies come from ------------------------------------------------------

class SnapshotCatalog:
    """Rate tables and client currencies from the server's in-memory snapshot."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def rate_table(self, table_id: int | None) -> RateTableInfo | None:
        return self.snapshot.rate_tables.get(table_id) if table_id is not None else None

    def currency(self, client_id: int | None) -> str:
        client = self.snapshot.clients.get(client_id) if client_id is not None else None
        return client.currency if client else "USD"


class StoreCatalog:
    """The same, read from the store (sweeper and CLI run without a snapshot)."""

    def __init__(self, session: Session):
        self.session = session
        self._tables: dict[int, RateTableInfo | None] = {}
        self._currencies: dict[int, str] = {}

    def rate_table(self, table_id: int | None) -> RateTableInfo | None:
        if table_id is None:
            return None
        if table_id not in self._tables:
            table = self.session.get(RateTable, table_id)
            if table is None:
                self._tables[table_id] = None
            else:
                rates = self.session.scalars(select(Rate).where(Rate.rate_table_id == table_id)).all()
                self._tables[table_id] = build_rate_table(table.id, table.name, table.currency, [
                    RateInfo(r.rate_table_id, r.prefix, r.price_per_minute, r.connection_fee, r.minimum_seconds,
                             r.interval_seconds, r.grace_seconds, r.effective_from, r.effective_until,
                             r.description)
                    for r in rates
                ])
        return self._tables[table_id]

    def currency(self, client_id: int | None) -> str:
        if client_id is None:
            return "USD"
        if client_id not in self._currencies:
            self._currencies[client_id] = self.session.scalar(
                select(Client.currency).where(Client.id == client_id)) or "USD"
        return self._currencies[client_id]


# -- small store helpers -----------------------------------------------------------------------

_INSERT_IGNORE: dict[tuple[str, str], object] = {}
_CDRS = Cdr.__table__
_CALLS = ActiveCall.__table__
_CLIENTS = Client.__table__
_LEGS = CdrLeg.__table__
_CDR_EXISTS = select(_LEGS.c.leg_key).where(_LEGS.c.leg_key == bindparam("leg_key"))
_CDR_WRITES: dict[str, object] = {}
_DEBIT = (_CLIENTS.update().where(_CLIENTS.c.id == bindparam("client_id"))
          .values(balance=_CLIENTS.c.balance - bindparam("cost", type_=Money())))
_DELETE_CALL = _CALLS.delete().where(_CALLS.c.id == bindparam("call_row_id"))


def _insert_ignore(session: Session, table, values: dict) -> bool:
    """INSERT ... ON CONFLICT (leg_key) DO NOTHING; True when the row was inserted."""
    dialect = session.get_bind().dialect.name
    stmt = _INSERT_IGNORE.get((dialect, table.name))
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = _INSERT_IGNORE[(dialect, table.name)] = insert(table).on_conflict_do_nothing(
            index_elements=["leg_key"])
    return session.connection().execute(stmt, values).rowcount == 1


def _cdr_statement(dialect: str):
    """The statement that claims a leg key and writes its CDR only if the claim is new.

    PostgreSQL: one round trip — a data-modifying CTE claims the key in cdr_legs with the CDR id
    taken from the cdrs sequence (ON CONFLICT DO NOTHING: a concurrent duplicate waits for the
    first transaction, then claims nothing) and the CDR insert selects from the claim, so it
    inserts nothing for a duplicate. SQLite: the claim alone (see _write_cdr_row).
    """
    stmt = _CDR_WRITES.get(dialect)
    if stmt is not None:
        return stmt
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        claim = (pg_insert(_LEGS)
                 .values(leg_key=bindparam("leg_key"), disconnect_time=bindparam("disconnect_time"),
                         cdr_id=text("nextval(pg_get_serial_sequence('cdrs', 'id'))"))
                 .on_conflict_do_nothing(index_elements=["leg_key"])
                 .returning(_LEGS.c.cdr_id, _LEGS.c.leg_key, _LEGS.c.disconnect_time)
                 .cte("claim"))
        names = [c.name for c in _CDRS.c if c.name not in ("id", "leg_key", "disconnect_time", "created_at")]
        rows = select(claim.c.cdr_id, claim.c.leg_key, claim.c.disconnect_time,
                      *[bindparam(name, type_=_CDRS.c[name].type) for name in names])
        stmt = insert(_CDRS).from_select(["id", "leg_key", "disconnect_time", *names], rows)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(_LEGS).on_conflict_do_nothing(index_elements=["leg_key"])
    _CDR_WRITES[dialect] = stmt
    return stmt


def _write_cdr_row(session: Session, values: dict) -> bool:
    """Claim values['leg_key'] and insert the CDR; False (nothing written) when already claimed."""
    conn = session.connection()
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return conn.execute(_cdr_statement(dialect), values).rowcount == 1
    # SQLite: writers hold the database lock (BEGIN IMMEDIATE) and statements are local calls,
    # so claim, insert, then record the CDR id in the claim.
    claimed = conn.execute(_cdr_statement(dialect), {"leg_key": values["leg_key"],
                                                      "disconnect_time": values["disconnect_time"]})
    if claimed.rowcount != 1:
        return False
    cdr_id = conn.execute(insert(_CDRS), values).inserted_primary_key[0]
    conn.execute(_LEGS.update().where(_LEGS.c.leg_key == values["leg_key"]).values(cdr_id=cdr_id))
    return True


def _cdr_exists(session: Session, leg_key: str) -> bool:
    return session.connection().execute(_CDR_EXISTS, {"leg_key": leg_key}).first() is not None


def _open_row(session: Session, leg_key: str) -> ActiveCall | None:
    return session.scalars(select(ActiveCall).where(ActiveCall.leg_key == leg_key).with_for_update()).first()


def _reservation(session: Session, facts: AcctFacts, call_id: str) -> ActiveCall | None:
    """The Access-Accept reservation this originating leg takes over, if any."""
    if facts.leg != "orig":
        return None
    return session.scalars(
        select(ActiveCall)
        .where(ActiveCall.leg_key == reservation_key(facts.nas_id, call_id), ActiveCall.state == "reserved")
        .with_for_update()
    ).first()


def debit(session: Session, client_id: int, cost: Decimal) -> None:
    """Take `cost` from the client's balance, in SQL, so concurrent debits never lose one."""
    session.connection().execute(_DEBIT, {"client_id": client_id, "cost": cost})


def fit_key(key: str) -> str:
    """A key that fits the 255-character columns and stays unique (long ids end in a digest)."""
    if len(key) <= KEY_SIZE:
        return key
    return key[:KEY_SIZE - 41] + ":" + hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


def _call_id(facts: AcctFacts) -> str:
    return fit_key(facts.call_id or facts.acct_session_id or facts.leg_key)


def _clip(value: str | None, size: int = 64) -> str:
    return (value or "")[:size]


# -- who a leg belongs to ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Party:
    account: AccountInfo | None
    client_id: int | None
    called: str               # tech prefix stripped
    tech_prefix: str
    rate_table_id: int | None


def _identify(snapshot: Snapshot, facts: AcctFacts) -> _Party:
    """The account of a leg that has no reservation: originator or terminator, as authorization does."""
    account: AccountInfo | None = None
    called, tech_prefix = facts.called_number or "", ""
    try:
        from radiusd.core import identify

        if facts.leg == "orig":
            found = identify.identify_originator(
                snapshot, facts.nas_id, facts.caller_address, facts.user_name, facts.calling_number,
                facts.called_number, facts.protocol, facts.port)
            if found is not None:
                account, called = found
                if called != (facts.called_number or "") and account.tech_prefix:
                    tech_prefix = account.tech_prefix
        else:
            account = identify.find_terminator(
                snapshot, facts.nas_id, facts.remote_address, facts.protocol, facts.port, facts.called_number)
            if account is not None:
                called, tech_prefix = strip_tech_prefix(facts.called_number, account.tech_prefix)
    except Exception as exc:  # a bad packet must not lose the leg: record it unassigned
        log.warning("accounting_identify_failed", leg_key=facts.leg_key, error=repr(exc))
        account = None
    if account is None:
        return _Party(None, None, called, tech_prefix, None)
    client = snapshot.clients.get(account.client_id)
    if facts.leg == "orig":
        table_id = account.orig_rate_table_id or (client.orig_rate_table_id if client else None)
    else:
        table_id = account.term_rate_table_id or (client.term_rate_table_id if client else None)
    return _Party(account, account.client_id, called, tech_prefix, table_id)


def _prefix_of(table: RateTableInfo | None, called: str, at: dt.datetime) -> str | None:
    from radiusd.core.rating import find_rate

    rate = find_rate(table, called, at)
    return rate.prefix if rate else None


# -- the events --------------------------------------------------------------------------------

def apply(session: Session, facts: AcctFacts, snapshot: Snapshot, now: dt.datetime) -> Outcome:
    """Apply one accounting event in the caller's transaction. Idempotent per leg key."""
    if len(facts.leg_key) > KEY_SIZE or (facts.acct_session_id and len(facts.acct_session_id) > KEY_SIZE):
        facts = dataclasses.replace(facts, leg_key=fit_key(facts.leg_key),
                                    acct_session_id=(facts.acct_session_id or "")[:KEY_SIZE] or None)
    if facts.status in ("on", "off"):
        return nas_reset(session, facts.nas_id, facts.event_time or now, SnapshotCatalog(snapshot), now)
    if facts.status == "start":
        return _start(session, facts, snapshot, now)
    if facts.status == "interim":
        return _interim(session, facts, snapshot, now)
    if facts.status in ("stop", "failed"):
        return _stop(session, facts, snapshot, now)
    raise ValueError(f"Acct-Status-Type: unknown value {facts.status!r}")


def _open(session: Session, facts: AcctFacts, snapshot: Snapshot, now: dt.datetime,
          started_at: dt.datetime, seen_at: dt.datetime, session_seconds: int) -> Outcome:
    call_id = _call_id(facts)
    reservation = _reservation(session, facts, call_id)
    if reservation is not None:
        # Re-key the reservation: the same row now is the call, so capacity counts it once.
        reservation.leg_key = facts.leg_key
        reservation.state = "active"
        reservation.acct_session_id = facts.acct_session_id
        reservation.expires_at = None
        reservation.started_at = started_at
        reservation.last_seen_at = seen_at
        reservation.session_seconds = session_seconds
        if facts.calling_number:
            reservation.caller = _clip(facts.calling_number)
        session.flush()
        return Outcome("took_over")
    party = _identify(snapshot, facts)
    table = SnapshotCatalog(snapshot).rate_table(party.rate_table_id)
    inserted = _insert_ignore(session, ActiveCall.__table__, dict(
        leg_key=facts.leg_key, call_id=call_id, acct_session_id=facts.acct_session_id, nas_id=facts.nas_id,
        leg=facts.leg, state="active", account_id=party.account.id if party.account else None,
        client_id=party.client_id, caller=_clip(facts.calling_number), called=_clip(party.called),
        rate_table_id=party.rate_table_id, prefix=_prefix_of(table, party.called, started_at),
        max_cost=Decimal(0), max_duration=None, created_at=now, expires_at=None, started_at=started_at,
        last_seen_at=seen_at, session_seconds=session_seconds,
    ))
    if not inserted:
        return Outcome("duplicate")
    if party.account is None:
        log.info("accounting_leg_unassigned", leg_key=facts.leg_key, leg=facts.leg, nas_id=facts.nas_id)
    return Outcome("opened")


def _start(session: Session, facts: AcctFacts, snapshot: Snapshot, now: dt.datetime) -> Outcome:
    if _cdr_exists(session, facts.leg_key):
        return Outcome("ignored", detail="start after stop")
    if _open_row(session, facts.leg_key) is not None:
        return Outcome("duplicate")
    started, seen = legs.start_times(facts, now)
    return _open(session, facts, snapshot, now, started_at=started, seen_at=seen, session_seconds=0)


def _interim(session: Session, facts: AcctFacts, snapshot: Snapshot, now: dt.datetime) -> Outcome:
    if _cdr_exists(session, facts.leg_key):
        return Outcome("ignored", detail="interim after stop")
    row = _open_row(session, facts.leg_key)
    if row is not None:
        row.last_seen_at, row.session_seconds = legs.interim_progress(
            facts, now, row.started_at, row.last_seen_at, row.session_seconds)
        return Outcome("updated")
    started, seen, seconds = legs.interim_opening(facts, now)
    return _open(session, facts, snapshot, now, started_at=started, seen_at=seen, session_seconds=seconds)


def _stop(session: Session, facts: AcctFacts, snapshot: Snapshot, now: dt.datetime) -> Outcome:
    if _cdr_exists(session, facts.leg_key):
        return Outcome("duplicate")
    catalog = SnapshotCatalog(snapshot)
    call_id = _call_id(facts)
    row = _open_row(session, facts.leg_key) or _reservation(session, facts, call_id)
    if row is not None:
        account = snapshot.accounts.get(row.account_id) if row.account_id is not None else None
        called = row.called or strip_tech_prefix(facts.called_number, account.tech_prefix if account else "")[0]
        tech_prefix = ""
        if account and account.tech_prefix and (facts.called_number or "").startswith(account.tech_prefix):
            tech_prefix = account.tech_prefix
        party = _Party(account, row.client_id, called, tech_prefix, row.rate_table_id)
        account_id = row.account_id
        started_at = row.started_at
        caller = facts.calling_number or row.caller
    else:
        party = _identify(snapshot, facts)
        account_id = party.account.id if party.account else None
        started_at = None
        caller = facts.calling_number
    disconnect = facts.disconnect_time or facts.event_time or now
    failed = facts.status == "failed"
    duration = 0 if failed else leg_duration(
        facts.session_time, facts.connect_time, facts.disconnect_time, started_at, facts.event_time or disconnect)
    connect = facts.connect_time or started_at
    if connect is None and duration > 0:
        connect = disconnect - dt.timedelta(seconds=duration)
    cause, result = describe(duration, facts.disconnect_cause, facts.terminate_cause)
    written = write_cdr(
        session, catalog, leg_key=facts.leg_key, call_id=call_id, acct_session_id=facts.acct_session_id,
        nas_id=facts.nas_id, leg=facts.leg, account_id=account_id, client_id=party.client_id, caller=caller,
        called=party.called, tech_prefix=party.tech_prefix, remote_address=facts.remote_address,
        setup_time=facts.setup_time, connect_time=connect, disconnect_time=disconnect, duration=duration,
        cause=cause, result=result, rate_table_id=party.rate_table_id, chargeable=not failed, row=row,
    )
    if written is None:
        return Outcome("duplicate")
    return Outcome("closed", cdrs=1, debited=written.cost if facts.leg == "orig" and party.client_id else Decimal(0))


def write_cdr(session: Session, catalog, *, leg_key: str, call_id: str, acct_session_id: str | None,
              nas_id: int | None, leg: str, account_id: int | None, client_id: int | None,
              caller: str | None, called: str, tech_prefix: str, remote_address: str | None,
              setup_time: dt.datetime | None, connect_time: dt.datetime | None,
              disconnect_time: dt.datetime, duration: int, cause: str, result: str,
              rate_table_id: int | None, chargeable: bool, row: ActiveCall | None) -> LegCharge | None:
    """Rate the leg, write its CDR, close its active call, debit an orig leg. None if already written."""
    table = catalog.rate_table(rate_table_id)
    charge = charge_leg(table, called, connect_time or disconnect_time, duration,
                        fallback_currency=catalog.currency(client_id), chargeable=chargeable)
    inserted = _write_cdr_row(session, dict(
        leg_key=leg_key, call_id=call_id, acct_session_id=acct_session_id, nas_id=nas_id, leg=leg,
        account_id=account_id, client_id=client_id, caller=_clip(caller), called=_clip(called),
        tech_prefix=_clip(tech_prefix, 32), remote_address=remote_address[:64] if remote_address else None,
        setup_time=setup_time, connect_time=connect_time, disconnect_time=disconnect_time, duration=duration,
        billed_seconds=charge.billed_seconds, disconnect_cause=_clip(cause, 32), result=result,
        rate_table_id=charge.rate_table.id if charge.rate_table else None,
        prefix=charge.rate.prefix if charge.rate else None,
        price_per_minute=charge.rate.price_per_minute if charge.rate else None,
        cost=charge.cost, currency=charge.currency,
    ))
    if row is not None:
        # The leg is over either way: an open row whose CDR exists must not keep counting.
        session.connection().execute(_DELETE_CALL, {"call_row_id": row.id})
        if row in session:
            session.expunge(row)
    if not inserted:
        return None  # a concurrent duplicate wrote it first: it also debited
    if leg == "orig" and client_id is not None and charge.cost:
        debit(session, client_id, charge.cost)
    if duration > 0 and not charge.rated and account_id is not None:
        log.warning("cdr_unrated", leg_key=leg_key, account_id=account_id, called=called)
    return charge


# -- closing calls without a Stop --------------------------------------------------------------

def proven_seconds(row: ActiveCall, until: dt.datetime | None = None) -> int:
    """How long an open call is known to have been up: last Interim / last-seen, never more."""
    if row.started_at is None:
        return 0
    seen = max(0, int((row.last_seen_at - row.started_at).total_seconds()))
    seconds = max(row.session_seconds or 0, seen)
    if until is not None:
        seconds = min(seconds, max(0, int((until - row.started_at).total_seconds())))
    return seconds


def close_row(session: Session, row: ActiveCall, catalog, disconnect_time: dt.datetime, duration: int,
              cause: str) -> LegCharge | None:
    """Write the CDR of an open call that ended without a Stop (reboot, stale, by hand)."""
    result = "success" if duration > 0 else "error"
    return write_cdr(
        session, catalog, leg_key=row.leg_key, call_id=row.call_id, acct_session_id=row.acct_session_id,
        nas_id=row.nas_id, leg=row.leg, account_id=row.account_id, client_id=row.client_id, caller=row.caller,
        called=row.called, tech_prefix="", remote_address=None, setup_time=None, connect_time=row.started_at,
        disconnect_time=disconnect_time, duration=duration, cause=cause, result=result,
        rate_table_id=row.rate_table_id, chargeable=True, row=row,
    )


def nas_reset(session: Session, nas_id: int, at: dt.datetime, catalog, now: dt.datetime) -> Outcome:
    """Accounting-On/Off: every call the NAS had open ended at `at`; its reservations are void.

    Only calls started at or before `at` are closed, so replaying an old Accounting-On (spool)
    never ends calls that began after the reboot.
    """
    rows = session.scalars(
        select(ActiveCall)
        .where(ActiveCall.nas_id == nas_id, ActiveCall.state == "active",
               or_(ActiveCall.started_at.is_(None), ActiveCall.started_at <= at))
        .order_by(ActiveCall.id)
        .with_for_update()
    ).all()
    written = 0
    total = Decimal(0)
    for row in rows:
        charge = close_row(session, row, catalog, at, proven_seconds(row, at), NAS_REBOOT)
        if charge is not None:
            written += 1
            total += charge.cost if row.leg == "orig" else 0
    dropped = session.execute(
        delete(ActiveCall).where(ActiveCall.nas_id == nas_id, ActiveCall.state == "reserved",
                                 ActiveCall.created_at <= at)
    ).rowcount
    log.info("nas_reset", nas_id=nas_id, closed=written, reservations_dropped=dropped)
    return Outcome("nas_reset", cdrs=written, debited=total, detail=f"{dropped} reservations dropped")
