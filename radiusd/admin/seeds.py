"""SQL seed files: portable `INSERT INTO t (cols) VALUES (...), (...);` loaded into either store.

Statements are parsed here and inserted through SQLAlchemy Core, not executed raw, because the
two stores keep some values differently (money is NUMERIC on PostgreSQL but integer micro-units
on SQLite; timestamps, booleans). That also lets us check table, column and value of every row
and name the file and line of the first bad one. A file loads in one transaction: all or nothing.

Supported: `--` and `/* */` comments; string literals ('' escapes a quote), numbers, TRUE, FALSE,
NULL; several rows per INSERT; statements over several lines; BEGIN/COMMIT lines (ignored, the
loader owns the transaction). An explicit column list is required. Tables are filled in file
order, so referenced rows must come first.
"""
from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from radiusd.admin import accounts, audit, clients, nas, rates, routing
from radiusd.admin import fields as F
from radiusd.errors import UserError
from radiusd.models import Account, Base, Money, UTCDateTime
from radiusd.store import sql
from radiusd.store.sealing import seal_values

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*)
  | (?P<block>/\*.*?\*/)
  | (?P<string>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")+")
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<punct>[(),;.])
""", re.S | re.X)

# Each admin table's column rules: the very ones the commands, the web and the API apply.
_RULES = {
    "clients": clients.COLUMN_RULES, "accounts": accounts.COLUMN_RULES,
    "account_networks": accounts.NETWORK_COLUMN_RULES, "nas": nas.COLUMN_RULES,
    "rate_tables": rates.TABLE_COLUMN_RULES, "rates": rates.COLUMN_RULES,
    "routing_plans": routing.PLAN_COLUMN_RULES, "routing_rules": routing.RULE_COLUMN_RULES,
    "web_users": {"name": lambda field, value: F.name(field, value, spaces=False)},
}
# How a row is named in a message about a duplicate or a missing reference.
_WHAT = {"clients": "client", "accounts": "account", "nas": "NAS", "rate_tables": "rate table", "rates": "rate",
         "routing_plans": "routing plan", "routing_rules": "routing rule", "account_networks": "account network",
         "web_users": "web user"}
_CHUNK = 500
# Tables the loader must not fill: the server maintains them itself.
_FORBIDDEN_TABLES = {"store_version", "account_usage"}   # account_usage: kept by triggers


@dataclass
class _Tok:
    kind: str
    value: str
    line: int


class _SeedError(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _tokens(source: str) -> list[_Tok]:
    newlines = [i for i, ch in enumerate(source) if ch == "\n"]

    def line_at(pos: int) -> int:
        return bisect.bisect_right(newlines, pos - 1) + 1

    tokens: list[_Tok] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            ch = source[pos]
            if ch == "'":
                raise _SeedError(line_at(pos), "unterminated string literal")
            if source.startswith("/*", pos):
                raise _SeedError(line_at(pos), "unterminated /* comment")
            raise _SeedError(line_at(pos), f"unexpected character ({ch!r})")
        kind = match.lastgroup
        if kind not in ("ws", "comment", "block"):
            value = match.group()
            if kind == "string":
                value = value[1:-1].replace("''", "'")
            elif kind == "qident":
                value = value[1:-1].replace('""', '"')
                kind = "word"
            tokens.append(_Tok(kind, value, line_at(pos)))
        pos = match.end()
    return tokens


@dataclass
class _Insert:
    table: str
    columns: list[str]
    rows: list[list[_Tok]]
    line: int


def _parse(tokens: list[_Tok]) -> list[_Insert]:
    statements: list[_Insert] = []
    i = 0
    last_line = tokens[-1].line if tokens else 1

    def peek() -> _Tok | None:
        return tokens[i] if i < len(tokens) else None

    def take(what: str) -> _Tok:
        nonlocal i
        tok = peek()
        if tok is None:
            raise _SeedError(last_line, f"unexpected end of file, expected {what}")
        i += 1
        return tok

    def expect_punct(ch: str) -> _Tok:
        tok = take(f"'{ch}'")
        if tok.kind != "punct" or tok.value != ch:
            raise _SeedError(tok.line, f"expected '{ch}', found {tok.value!r}")
        return tok

    def expect_word(word: str) -> _Tok:
        tok = take(word)
        if tok.kind != "word" or tok.value.upper() != word:
            raise _SeedError(tok.line, f"expected {word}, found {tok.value!r}")
        return tok

    def identifier(what: str) -> _Tok:
        tok = take(what)
        if tok.kind != "word":
            raise _SeedError(tok.line, f"expected {what}, found {tok.value!r}")
        return tok

    while i < len(tokens):
        tok = take("a statement")
        if tok.kind == "punct" and tok.value == ";":
            continue
        word = tok.value.upper() if tok.kind == "word" else ""
        if word in ("BEGIN", "COMMIT", "START", "END"):
            while peek() is not None and not (peek().kind == "punct" and peek().value == ";"):
                take(";")
            continue
        if word != "INSERT":
            raise _SeedError(tok.line, f"only INSERT INTO ... VALUES statements are supported, found {tok.value!r}")
        start = tok.line
        expect_word("INTO")
        table = identifier("a table name").value
        if peek() is not None and peek().kind == "punct" and peek().value == ".":
            take(".")
            table = identifier("a table name").value  # schema-qualified: public.nas
        following = peek()
        if following is None or following.kind != "punct" or following.value != "(":
            raise _SeedError(following.line if following else start,
                             f"INSERT INTO {table}: an explicit column list is required")
        expect_punct("(")
        columns: list[str] = []
        while True:
            columns.append(identifier("a column name").value)
            sep = take("',' or ')'")
            if sep.kind == "punct" and sep.value == ")":
                break
            if not (sep.kind == "punct" and sep.value == ","):
                raise _SeedError(sep.line, f"expected ',' or ')' in the column list, found {sep.value!r}")
        expect_word("VALUES")
        rows: list[list[_Tok]] = []
        while True:
            open_tok = expect_punct("(")
            row: list[_Tok] = []
            while True:
                value = take("a value")
                if value.kind == "punct":
                    raise _SeedError(value.line, f"expected a value, found {value.value!r}")
                if value.kind == "word" and value.value.upper() not in ("TRUE", "FALSE", "NULL"):
                    raise _SeedError(value.line, f"unsupported value {value.value!r} "
                                                 "(use a 'string', a number, TRUE, FALSE or NULL)")
                row.append(value)
                sep = take("',' or ')'")
                if sep.kind == "punct" and sep.value == ")":
                    break
                if not (sep.kind == "punct" and sep.value == ","):
                    raise _SeedError(sep.line, f"expected ',' or ')' after a value, found {sep.value!r}")
            if len(row) != len(columns):
                raise _SeedError(open_tok.line, f"{len(row)} values for {len(columns)} columns of {table}")
            rows.append(row)
            sep = peek()
            if sep is not None and sep.kind == "punct" and sep.value == ",":
                take(",")
                continue
            break
        end = peek()
        if end is not None:
            if not (end.kind == "punct" and end.value == ";"):
                raise _SeedError(end.line, f"expected ';' after the VALUES list, found {end.value!r}")
            take(";")
        statements.append(_Insert(table, columns, rows, start))
    return statements


def _convert(table: str, column, tok: _Tok):
    """A literal token as the Python value for `column`, checked like the admin commands check it."""
    field = f"{table}.{column.key}"
    rule = _RULES.get(table, {}).get(column.key)
    if tok.kind == "word" and tok.value.upper() == "NULL":
        if not column.nullable:
            raise _SeedError(tok.line, f"{field}: must not be NULL")
        return rule(field, None) if rule else None
    kind = column.type
    is_bool = tok.kind == "word"
    if isinstance(kind, Money):
        if is_bool:
            raise _SeedError(tok.line, f"{field}: expected an amount ({tok.value})")
        return (rule or F.money)(field, tok.value)
    if isinstance(kind, UTCDateTime):
        if tok.kind != "string":
            raise _SeedError(tok.line, f"{field}: expected a date in quotes ({tok.value})")
        return (rule or F.timestamp)(field, tok.value)
    if isinstance(kind, Boolean):
        if is_bool or tok.kind == "string":
            return F.boolean(field, tok.value)
        if tok.value in ("0", "1"):
            return tok.value == "1"
        raise _SeedError(tok.line, f"{field}: expected TRUE or FALSE ({tok.value})")
    if isinstance(kind, Integer):
        if is_bool:
            raise _SeedError(tok.line, f"{field}: expected a whole number ({tok.value})")
        if rule:
            return rule(field, tok.value)
        return F.integer(field, tok.value, maximum=F.type_max(kind))
    if isinstance(kind, (String, Text)):
        if tok.kind != "string":
            # an unquoted 0099 would silently become 99: insist on quotes for text
            raise _SeedError(tok.line, f"{field}: expected text in single quotes ({tok.value})")
        length = getattr(kind, "length", None)
        if rule:
            value = rule(field, tok.value)
        else:
            value = F.text(field, tok.value, max_len=length or 1_000_000, strip=False,
                           multiline=not isinstance(kind, String) or isinstance(kind, Text))
        if length and value is not None and len(value) > length:
            raise _SeedError(tok.line, f"{field}: longer than {length} characters ({ascii(value[:40])})")
        return value
    raise _SeedError(tok.line, f"{field}: column type not supported by the seed loader")


def _check_row(table: str, values: dict) -> None:
    """Rules between a row's own columns, as the admin commands apply them."""
    try:
        if table == "accounts":
            accounts.check_identity_columns(values)
        elif table == "rates" and values.get("effective_from") is not None:
            rates.check_period(values["effective_from"], values.get("effective_until"))
    except UserError as exc:
        raise UserError(f"{table}.{exc}") from None


def _required(table, columns: list) -> None:
    """A column the store needs and the statement leaves out: named before the insert fails."""
    given = {c.key for c in columns}
    for column in table.columns:
        if column.key in given or column.nullable or column.server_default is not None:
            continue
        if column is table.autoincrement_column or column.default is not None:
            continue
        raise UserError(f"{table.name}.{column.key}: is required (missing)")


def _server_default(column):
    default = column.server_default
    arg = getattr(default, "arg", None)
    return arg if isinstance(arg, str) else None


def _unique_keys(table):
    """(columns, where) of every unique key: primary key, unique constraints and (partial) indexes."""
    keys = []
    if all(c.key for c in table.primary_key.columns):
        keys.append((list(table.primary_key.columns), None))
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            keys.append((list(constraint.columns), None))
    for column in table.columns:
        if column.unique:
            keys.append(([column], None))
    for index in table.indexes:
        if isinstance(index, Index) and index.unique:
            where = index.dialect_options["sqlite"].get("where")
            keys.append((list(index.columns), where))
    unique, seen = [], set()
    for columns, where in keys:
        marker = (tuple(c.key for c in columns), str(where))
        if marker not in seen:
            seen.add(marker)
            unique.append((columns, where))
    return unique


_WHERE = re.compile(r"^\s*(\w+)\s*=\s*'([^']*)'\s*$")


def _shown(values) -> str:
    return ", ".join("''" if v == "" else str(v) for v in values)


def _check_unique(session: Session, table, rows: list[dict], lines: list[int]) -> None:
    """No row may take a key the store or an earlier row already has: one message on both stores."""
    id_column = table.c.get("id")
    for columns, where in _unique_keys(table):
        condition = None
        if where is not None:
            match = _WHERE.match(str(where))
            if match is None:
                continue  # left to the store
            condition = match.groups()
        keyed = []
        for row, line in zip(rows, lines):
            values = []
            for column in columns:
                value = row.get(column.key, _server_default(column))
                values.append(value)
            if any(v is None for v in values):
                continue  # NULLs never clash; an autoincrement id is the store's to pick
            if condition is not None and row.get(condition[0], _server_default(table.c[condition[0]])) != condition[1]:
                continue
            keyed.append((tuple(values), line))
        if not keyed:
            continue
        field = f"{table.name}.{'/'.join(c.key for c in columns)}"
        earlier: dict[tuple, int] = {}
        for key, line in keyed:
            if key in earlier:
                raise _SeedError(line, f"{field}: same as line {earlier[key]} ({_shown(key)})")
            earlier[key] = line
        wanted = list(columns) + ([id_column] if id_column is not None else [])
        for start in range(0, len(keyed), _CHUNK):
            chunk = keyed[start:start + _CHUNK]
            query = select(*wanted).where(columns[0].in_({key[0] for key, _ in chunk}))
            if condition is not None:
                query = query.where(table.c[condition[0]] == condition[1])
            existing = {tuple(found[:len(columns)]): (found[-1] if id_column is not None else None)
                        for found in session.execute(query)}
            for key, line in chunk:
                if key in existing:
                    what = _WHAT.get(table.name, table.name)
                    owner = f"{what} #{existing[key]}" if existing[key] is not None else f"a {what} in the store"
                    raise _SeedError(line, f"{field}: already used by {owner} ({_shown(key)})")


def _check_references(session: Session, table, rows: list[dict], lines: list[int]) -> None:
    """Every id a row refers to exists (rows of earlier statements count): one message on both stores."""
    for column in table.columns:
        for key in column.foreign_keys:
            target = key.column
            wanted = [(row[column.key], line) for row, line in zip(rows, lines) if row.get(column.key) is not None]
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                found = set(session.scalars(select(target).where(target.in_({v for v, _ in chunk}))))
                for value, line in chunk:
                    if value not in found:
                        what = _WHAT.get(target.table.name, target.table.name)
                        raise _SeedError(line, f"{table.name}.{column.key}: no such {what} ({value})")


def _check_accounts(session: Session, touched: dict[int, int]) -> None:
    """Every account the file added or gave networks/gateways: the whole-account rules of `account add`.

    An account is compared with the store and the accounts before it in the file, so a duplicate is
    reported at the later one, the one that would make the first ambiguous."""
    session.expire_all()
    order = sorted(touched.items(), key=lambda item: item[1])
    for position, (account_id, line) in enumerate(order):
        account = session.get(Account, account_id)
        if account is None:
            continue
        later = [other for other, _ in order[position + 1:]]
        try:
            accounts.check_stored_account(session, account, ignore_ids=later)
        except UserError as exc:
            raise _SeedError(line, f"accounts.{exc} (account {account.name})") from None


def _db_reason(exc: Exception) -> str:
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


def _reset_sequences(session: Session, tables: list[str]) -> None:
    """After explicit ids, move PostgreSQL's serial sequences past them so later inserts don't collide."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for name in tables:
        table = Base.metadata.tables[name]
        if "id" not in table.c or not table.c.id.primary_key:
            continue
        reset = sql.statement("postgresql", "seeds", "reset_sequence")
        session.connection().exec_driver_sql(reset.format(table=table.name), {"table": table.name})


def load_seed_text(session: Session, source: str, filename: str, *, actor: str, context: str = "seed") -> dict[str, int]:
    """Load seed SQL into the caller's transaction; UserError `FILE:LINE: reason` on the first problem.

    Returns rows loaded per table, in file order. On error the caller must roll back (load_seed does).
    """
    try:
        statements = _parse(_tokens(source))
        loaded: dict[str, int] = {}
        touched: dict[int, int] = {}  # account id -> the first line that adds or changes it
        for statement in statements:
            table = Base.metadata.tables.get(statement.table.lower())
            if table is None or table.name in _FORBIDDEN_TABLES:
                raise _SeedError(statement.line, f"unknown table ({statement.table})")
            columns = []
            for position, name in enumerate(statement.columns):
                column = table.c.get(name.lower())
                if column is None:
                    raise _SeedError(statement.line, f"table {table.name} has no column ({name})")
                if column in columns:
                    raise _SeedError(statement.line, f"column named twice ({name})")
                columns.append(column)
            try:
                _required(table, columns)
            except UserError as exc:
                raise _SeedError(statement.line, str(exc)) from None
            rows, lines = [], []
            for row in statement.rows:
                values = {}
                for column, tok in zip(columns, row):
                    try:
                        values[column.key] = _convert(table.name, column, tok)
                    except UserError as exc:
                        raise _SeedError(tok.line, str(exc)) from None
                try:
                    _check_row(table.name, values)
                except UserError as exc:
                    raise _SeedError(row[0].line, str(exc)) from None
                rows.append(values)
                lines.append(row[0].line)
            _check_unique(session, table, rows, lines)
            _check_references(session, table, rows, lines)
            if table.name in ("accounts", "account_networks", "account_gateways"):
                key = "id" if table.name == "accounts" else "account_id"
                for values, line in zip(rows, lines):
                    if values.get(key) is not None:
                        touched.setdefault(values[key], line)
            # secrets at rest (issue 11 item 6): clear passwords/secrets sealed before they reach the store
            rows = [seal_values(session, table.name, values) for values in rows]
            try:
                if table.name == "accounts" and not any(c.key == "id" for c in columns):
                    # ids the store picks: learnt back so the account is checked as a whole below
                    ids = session.scalars(insert(table).returning(table.c.id), rows).all()
                    for account_id, line in zip(ids, lines):
                        touched.setdefault(account_id, line)
                else:
                    session.execute(insert(table), rows)
            except (IntegrityError, StatementError, DBAPIError) as exc:
                raise _SeedError(statement.line, f"{table.name}: {_db_reason(exc)}") from None
            loaded[table.name] = loaded.get(table.name, 0) + len(rows)
        _check_accounts(session, touched)
    except _SeedError as exc:
        raise UserError(f"{filename}:{exc.line}: {exc.reason}") from None
    if not loaded:
        raise UserError(f"{filename}:1: no INSERT statements found")
    _reset_sequences(session, list(loaded))
    audit.record(session, object_type="seed", object_id=None, object_name=os.path.basename(filename),
                 action="import", actor=actor, context=context,
                 changes={name: [None, count] for name, count in loaded.items()})
    return loaded


def read_seed(path) -> str:
    return F.read_text_file(path)


def load_seed(sessions, path, actor: str = "seed", context: str = "seed") -> dict[str, int]:
    """Load a .sql seed file in one transaction (all rows or none); returns rows loaded per table.

    `sessions` is a sessionmaker (see radiusd.db.open_store). Raises UserError `FILE:LINE: reason`.
    """
    source = read_seed(path)
    with sessions.begin() as session:
        return load_seed_text(session, source, os.fspath(path), actor=actor, context=context)


def table_counts(session: Session, tables=None) -> dict[str, int]:
    """Rows per table (all model tables by default): for reports and tests."""
    names = tables or [t for t in Base.metadata.tables]
    return {name: session.scalar(select(func.count()).select_from(Base.metadata.tables[name])) for name in names}
