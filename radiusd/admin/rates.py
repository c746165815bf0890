"""Rate tables and their rates, including rate-deck import from CSV.

CSV header (only prefix and price_per_minute are required, columns in any order):
    prefix,description,price_per_minute,connection_fee,minimum_seconds,interval_seconds,
    grace_seconds,effective_from,effective_until
Dates are ISO-8601; a date alone means midnight UTC; effective_from defaults to 1970-01-01 UTC.
One bad row aborts the whole import with `FILE:LINE: field: problem (value)`.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import os
from decimal import Decimal

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from radiusd.admin import audit
from radiusd.admin import fields as F
from radiusd.admin.refs import find, refuse_if_used
from radiusd.errors import UserError
from radiusd.models import Account, ActiveCall, Client, Rate, RateTable
from radiusd.store.accounting import forget_references

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
CSV_COLUMNS = ("prefix", "description", "price_per_minute", "connection_fee", "minimum_seconds",
               "interval_seconds", "grace_seconds", "effective_from", "effective_until")
REQUIRED_COLUMNS = ("prefix", "price_per_minute")

# How each column's value is checked, from the CLI, the web, the API, CSV decks and seed files alike.
TABLE_COLUMN_RULES = {"name": lambda field, value: F.name(field, value, spaces=False), "currency": F.currency,
                      "notes": F.notes}
COLUMN_RULES = {
    "prefix": F.digits_prefix,
    "description": lambda field, value: F.text(field, value, max_len=200),
    "price_per_minute": lambda field, value: F.money(field, value, minimum=Decimal(0)),
    "connection_fee": lambda field, value: F.money(field, value, minimum=Decimal(0)),
    "minimum_seconds": lambda field, value: F.integer(field, value, minimum=0),
    "interval_seconds": lambda field, value: F.integer(field, value, minimum=1),
    "grace_seconds": lambda field, value: F.integer(field, value, minimum=0),
    "effective_from": F.timestamp,
    "effective_until": lambda field, value: F.timestamp(field, value, nullable=True),
}


def check_period(effective_from, effective_until, shown=None) -> None:
    """A rate's period: effective_until, when set, after effective_from."""
    if effective_until is not None and effective_until <= effective_from:
        raise F.fail("effective_until", "must be after effective_from",
                     effective_until.isoformat() if shown is None else shown)


def rate_table_record(table: RateTable, rate_count: int | None = None) -> dict:
    record = {"id": table.id, "name": table.name, "currency": table.currency, "notes": table.notes}
    if rate_count is not None:
        record["rates"] = rate_count
    return record


def rate_record(rate: Rate) -> dict:
    return {
        "prefix": rate.prefix, "description": rate.description, "price_per_minute": F.money_out(rate.price_per_minute),
        "connection_fee": F.money_out(rate.connection_fee), "minimum_seconds": rate.minimum_seconds,
        "interval_seconds": rate.interval_seconds, "grace_seconds": rate.grace_seconds,
        "effective_from": rate.effective_from, "effective_until": rate.effective_until,
    }


def create_rate_table(session: Session, *, actor: str, context: str = "cli", name, currency="USD",
                      notes: str = "") -> dict:
    name = TABLE_COLUMN_RULES["name"]("name", name)
    if session.scalars(select(RateTable).where(RateTable.name == name)).first() is not None:
        raise F.conflict("name", "a rate table with this name exists", name)
    table = RateTable(name=name, currency=TABLE_COLUMN_RULES["currency"]("currency", currency),
                      notes=TABLE_COLUMN_RULES["notes"]("notes", notes), created_at=audit.utcnow())
    session.add(table)
    session.flush()
    record = rate_table_record(table)
    audit.record(session, object_type="rate_table", object_id=table.id, object_name=table.name, action="create",
                 actor=actor, context=context, changes=audit.diff({}, record))
    return record


def update_rate_table(session: Session, ref, *, actor: str, context: str = "cli", **values) -> dict:
    """Rename a rate table, change its currency or notes."""
    table = find(session, RateTable, ref, "rate_table")
    unknown = set(values) - {"name", "currency", "notes"}
    if unknown:
        field = sorted(unknown)[0]
        raise F.fail(field, "not a rate table field", values[field])
    before = rate_table_record(table)
    if "name" in values:
        name = TABLE_COLUMN_RULES["name"]("name", values["name"])
        other = session.scalars(select(RateTable).where(RateTable.name == name, RateTable.id != table.id)).first()
        if other is not None:
            raise F.fail("name", "a rate table with this name exists", name)
        table.name = name
    if "currency" in values:
        table.currency = TABLE_COLUMN_RULES["currency"]("currency", values["currency"])
    if "notes" in values:
        table.notes = TABLE_COLUMN_RULES["notes"]("notes", values["notes"])
    session.flush()
    after = rate_table_record(table)
    changes = audit.diff(before, after)
    if changes:
        audit.record(session, object_type="rate_table", object_id=table.id, object_name=table.name,
                     action="update", actor=actor, context=context, changes=changes)
    return after


def rate_table_users(session: Session, table_id: int) -> list[tuple[str, list[str]]]:
    """Who rates calls with this table: clients and accounts (orig or term), calls in progress."""
    return [
        ("client", list(session.scalars(select(Client.name).where(
            (Client.orig_rate_table_id == table_id) | (Client.term_rate_table_id == table_id)).order_by(Client.id)))),
        ("account", list(session.scalars(select(Account.name).where(
            (Account.orig_rate_table_id == table_id) | (Account.term_rate_table_id == table_id))
            .order_by(Account.id)))),
        ("call in progress", [f"#{i}" for i in session.scalars(
            select(ActiveCall.id).where(ActiveCall.rate_table_id == table_id).order_by(ActiveCall.id))]),
    ]


def delete_rate_table(session: Session, ref, *, actor: str, context: str = "cli") -> dict:
    """Delete a rate table and its rates; refused while a client, an account or a call uses it.

    The row is locked first, so a concurrent change pointing a client at the table waits for us
    (and then fails on the foreign key) instead of being silently reset to no table.
    """
    table = find(session, RateTable, ref, "rate_table", lock=True)
    refuse_if_used("rate_table", table.name, rate_table_users(session, table.id),
                   "point them at another table (or none) first")
    rate_count = session.scalar(select(func.count()).select_from(Rate).where(Rate.rate_table_id == table.id))
    prior = rate_table_record(table, rate_count)
    session.execute(delete(Rate).where(Rate.rate_table_id == table.id))
    forget_references(session, rate_table_id=table.id)   # the CDRs (and any call that slipped in) rated by it
    session.delete(table)
    session.flush()
    audit.record(session, object_type="rate_table", object_id=prior["id"], object_name=prior["name"],
                 action="delete", actor=actor, context=context, changes=audit.diff(prior, {}))
    return {"rate_table": prior["name"], "id": prior["id"], "rates_deleted": rate_count}


def list_rate_tables(session: Session) -> list[dict]:
    counts = dict(session.execute(select(Rate.rate_table_id, func.count()).group_by(Rate.rate_table_id)).all())
    return [rate_table_record(t, counts.get(t.id, 0)) for t in session.scalars(select(RateTable).order_by(RateTable.id))]


def show_rate_table(session: Session, ref) -> dict:
    table = find(session, RateTable, ref, "rate_table")
    rates = session.scalars(select(Rate).where(Rate.rate_table_id == table.id)
                            .order_by(Rate.prefix, Rate.effective_from)).all()
    record = rate_table_record(table, len(rates))
    record["used_by_clients"] = list(session.scalars(select(Client.name).where(
        (Client.orig_rate_table_id == table.id) | (Client.term_rate_table_id == table.id)).order_by(Client.id)))
    record["rate_list"] = [rate_record(r) for r in rates]
    return record


def rate_values(values: dict) -> dict:
    """Check one rate's fields (strings or typed) and return column values for `rates`."""
    unknown = set(values) - set(CSV_COLUMNS)
    if unknown:
        field = sorted(unknown)[0]
        raise F.fail(field, "not a rate field", values[field])

    def given(key):
        value = values.get(key)
        return None if value is None or (isinstance(value, str) and value.strip() == "") else value

    if "prefix" not in values or values["prefix"] is None:
        raise F.fail("prefix", "is required ('' for any destination)", "missing")
    defaults = {"connection_fee": "0", "minimum_seconds": 0, "interval_seconds": 1, "grace_seconds": 0,
                "effective_from": EPOCH}
    row = {"prefix": COLUMN_RULES["prefix"]("prefix", values["prefix"]),
           "description": COLUMN_RULES["description"]("description", values.get("description"))}
    for key in CSV_COLUMNS[2:]:
        value = given(key)
        row[key] = COLUMN_RULES[key](key, defaults.get(key) if value is None else value)
    check_period(row["effective_from"], row["effective_until"], values.get("effective_until"))
    return row


def _existing_keys(session: Session, table_id: int) -> set[tuple[str, dt.datetime]]:
    return {(p, f) for p, f in session.execute(
        select(Rate.prefix, Rate.effective_from).where(Rate.rate_table_id == table_id))}


def add_rate(session: Session, table_ref, *, actor: str, context: str = "cli", **values) -> dict:
    """Add one rate to a rate table."""
    table = find(session, RateTable, table_ref, "rate_table")
    row = rate_values(values)
    if (row["prefix"], row["effective_from"]) in _existing_keys(session, table.id):
        raise F.conflict("prefix", f"already has a rate effective from {row['effective_from'].isoformat()}",
                     row["prefix"])
    session.execute(insert(Rate), [{"rate_table_id": table.id, **row}])
    audit.record(session, object_type="rate_table", object_id=table.id, object_name=table.name, action="rate-add",
                 actor=actor, context=context, changes={f"rate {row['prefix']!r}": [None, audit.plain(row)]})
    return {"rate_table": table.name, **row}


RATE_UPDATABLE = ("description", "price_per_minute", "connection_fee", "minimum_seconds", "interval_seconds",
                  "grace_seconds", "effective_until")


def _one_rate(session: Session, table: RateTable, prefix, effective_from) -> Rate:
    """The rate of `table` for `prefix`, chosen by effective_from when the prefix has several."""
    prefix = F.digits_prefix("prefix", prefix)
    query = select(Rate).where(Rate.rate_table_id == table.id, Rate.prefix == prefix)
    if effective_from not in (None, ""):
        query = query.where(Rate.effective_from == F.timestamp("effective_from", effective_from))
    found = session.scalars(query.order_by(Rate.effective_from).with_for_update()).all()
    if not found:
        what = f"no rate in {table.name} for this prefix" + (
            f" effective from {effective_from}" if effective_from not in (None, "") else "")
        raise F.fail("prefix", what, prefix)
    if len(found) > 1:
        starts = ", ".join(r.effective_from.date().isoformat() if r.effective_from.time() == dt.time() else
                           r.effective_from.isoformat() for r in found)
        raise F.fail("effective_from", f"prefix {prefix} has {len(found)} rates in {table.name} "
                                       f"(effective from {starts}): say which", "missing")
    return found[0]


def delete_rate(session: Session, table_ref, *, actor: str, context: str = "cli", prefix,
                effective_from=None) -> dict:
    """Delete one rate (found like update_rate); refused while a call in progress is rated by it (a
    call is rated at its Stop, so it would end unrated)."""
    table = find(session, RateTable, table_ref, "rate_table")
    rate = _one_rate(session, table, prefix, effective_from)
    calls = session.scalars(select(ActiveCall.id).where(ActiveCall.rate_table_id == table.id,
                                                        ActiveCall.prefix == rate.prefix).order_by(ActiveCall.id))
    refuse_if_used("prefix", rate.prefix, [("call in progress", [f"#{i}" for i in calls])],
                   "let them end (or `calls remove` them) first")
    prior = rate_record(rate)
    session.delete(rate)
    session.flush()
    audit.record(session, object_type="rate_table", object_id=table.id, object_name=table.name,
                 action="rate-delete", actor=actor, context=context,
                 changes={f"rate {prior['prefix']!r}": [audit.plain(prior), None]})
    return {"rate_table": table.name, "deleted": prior}


def parse_rates_csv(text: str, filename: str) -> list[dict]:
    """Rows of a rate deck as checked column values; UserError `FILE:LINE: reason` on the first bad row."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{filename}:1: empty file, expected a header line "
                        f"({','.join(REQUIRED_COLUMNS)},...)") from None
    except csv.Error as exc:
        raise UserError(f"{filename}:1: {exc}") from None
    columns = [h.strip().lower() for h in header]
    for column in columns:
        if column not in CSV_COLUMNS:
            raise UserError(f"{filename}:1: unknown column ({column}); expected some of {','.join(CSV_COLUMNS)}")
    if len(set(columns)) != len(columns):
        raise UserError(f"{filename}:1: a column is repeated ({','.join(columns)})")
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise UserError(f"{filename}:1: required column missing ({column})")
    rows: list[dict] = []
    seen: dict[tuple, int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UserError(f"{filename}:{reader.line_num}: {exc}") from None
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            raise UserError(f"{filename}:{line}: expected {len(columns)} values, got {len(cells)}")
        try:
            row = rate_values(dict(zip(columns, cells)))
        except UserError as exc:
            raise UserError(f"{filename}:{line}: {exc}") from None
        key = (row["prefix"], row["effective_from"])
        if key in seen:
            raise UserError(f"{filename}:{line}: prefix: same prefix and effective_from as line {seen[key]} "
                            f"({row['prefix']})")
        seen[key] = line
        row["_line"] = line
        rows.append(row)
    return rows


def import_rates_text(session: Session, table_ref, text: str, filename: str, *, actor: str, context: str = "cli",
                      replace: bool = False) -> dict:
    table = find(session, RateTable, table_ref, "rate_table")
    rows = parse_rates_csv(text, filename)
    before = session.scalar(select(func.count()).select_from(Rate).where(Rate.rate_table_id == table.id))
    if replace:
        session.execute(delete(Rate).where(Rate.rate_table_id == table.id))
    else:
        existing = _existing_keys(session, table.id)
        for row in rows:
            if (row["prefix"], row["effective_from"]) in existing:
                raise UserError(f"{filename}:{row['_line']}: prefix: table {table.name} already has this prefix "
                                f"effective from {row['effective_from'].isoformat()}; use --replace "
                                f"({row['prefix']})")
    payload = [{"rate_table_id": table.id, **{k: v for k, v in r.items() if k != "_line"}} for r in rows]
    for start in range(0, len(payload), 5000):
        session.execute(insert(Rate), payload[start:start + 5000])
    after = session.scalar(select(func.count()).select_from(Rate).where(Rate.rate_table_id == table.id))
    audit.record(session, object_type="rate_table", object_id=table.id, object_name=table.name, action="import",
                 actor=actor, context=context,
                 changes={"rates": [before, after], "file": [None, os.path.basename(filename)],
                          "replaced": [None, bool(replace)]})
    return {"rate_table": table.name, "file": filename, "rows_imported": len(rows), "replaced": before if replace else 0,
            "rates_in_table": after}


def import_rates(session: Session, table_ref, path, *, actor: str, context: str = "cli", replace: bool = False) -> dict:
    """Import a CSV rate deck into a rate table (all rows or none); `replace` drops the old rates first."""
    path = os.fspath(path)
    text = F.read_text_file(path)
    return import_rates_text(session, table_ref, text, path, actor=actor, context=context, replace=replace)


def rate_page(session: Session, table_ref, *, prefix=None, offset=0, limit=50) -> dict:
    """One page of a rate table's rates by prefix; `prefix` keeps those starting with it.

    Returns {"table", "total", "offset", "limit", "rows"}; each row is a rate record plus its id.
    """
    table = find(session, RateTable, table_ref, "rate_table")
    offset = F.integer("offset", offset, minimum=0)
    limit = F.integer("limit", limit, minimum=1, maximum=1000)
    query = select(Rate).where(Rate.rate_table_id == table.id)
    if prefix not in (None, ""):
        query = query.where(Rate.prefix.startswith(F.digits_prefix("prefix", prefix)))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = [{"id": r.id, **rate_record(r)} for r in session.scalars(
        query.order_by(Rate.prefix, Rate.effective_from).offset(offset).limit(limit))]
    return {"table": rate_table_record(table), "total": total, "offset": offset, "limit": limit, "rows": rows}


def _find_rate(session: Session, table: RateTable, rate_id) -> Rate:
    rate_id = F.integer("rate", rate_id, minimum=1)
    rate = session.get(Rate, rate_id)
    if rate is None or rate.rate_table_id != table.id:
        raise F.fail("rate", f"no such rate in table {table.name}", rate_id)
    return rate


def update_rate(session: Session, table_ref, rate_id=None, *, actor: str, context: str = "cli", prefix=None,
                effective_from=None, **values) -> dict:
    """Change fields of one rate (the same checks as an imported row); setting effective_until
    end-dates it: from then on the rate no longer prices calls.

    The rate is named by its id (the web and the API: then `prefix` and `effective_from` are new
    values like any other) or by its prefix, and effective_from when the prefix has several (the
    CLI: then they name the rate and cannot change)."""
    table = find(session, RateTable, table_ref, "rate_table")
    if rate_id not in (None, ""):
        rate = _find_rate(session, table, rate_id)
        values.update({k: v for k, v in (("prefix", prefix), ("effective_from", effective_from)) if v is not None})
        changeable = CSV_COLUMNS
    else:
        rate = _one_rate(session, table, prefix, effective_from)
        changeable = RATE_UPDATABLE
    unknown = set(values) - set(changeable)
    if unknown:
        field = sorted(unknown)[0]
        raise F.fail(field, "not a rate field that can change here (prefix and effective_from name the rate)",
                     values[field])
    before = rate_record(rate)
    merged = {k: v for k, v in before.items()}
    merged.update(values)
    row = rate_values(merged)
    if (row["prefix"], row["effective_from"]) != (rate.prefix, rate.effective_from) and \
            (row["prefix"], row["effective_from"]) in _existing_keys(session, table.id):
        raise F.conflict("prefix", f"already has a rate effective from {row['effective_from'].isoformat()}",
                     row["prefix"])
    for key, value in row.items():
        setattr(rate, key, value)
    session.flush()
    after = rate_record(rate)
    changed = sorted(audit.diff(before, after))
    if changed:
        # one entry per rate, named as the operator knows it: prefix and the day it took effect
        label = f"rate {before['prefix']!r} from {audit.plain(before['effective_from'])}"
        audit.record(session, object_type="rate_table", object_id=table.id, object_name=table.name,
                     action="rate-update", actor=actor, context=context,
                     changes={label: [audit.plain({k: before[k] for k in changed}),
                                      audit.plain({k: after[k] for k in changed})]})
    return {"rate_table": table.name, "id": rate.id, **after}


def end_rate(session: Session, table_ref, rate_id, until, *, actor: str, context: str = "cli") -> dict:
    """End-date one rate at `until` (ISO-8601 date or date-time)."""
    return update_rate(session, table_ref, rate_id, actor=actor, context=context,
                       effective_until=F.timestamp("effective_until", until))


def show_rate(session: Session, table_ref, rate_id) -> dict:
    """One rate of a table: {"table": table record, "rate": rate record with its id}."""
    table = find(session, RateTable, table_ref, "rate_table")
    rate = _find_rate(session, table, rate_id)
    return {"table": rate_table_record(table), "rate": {"id": rate.id, **rate_record(rate)}}
