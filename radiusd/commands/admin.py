"""Admin commands: db, seed, client, account, nas, ratetable, rates, routing, audit.

A thin shell over the admin module: every option is taken as text and checked there, so a bad
value gives one line `radiusd: error: <field>: <problem> (<value>)`, exit 2, nothing written.
Each command runs in one transaction. Passwords and secrets are never printed.
"""
from __future__ import annotations

import argparse
import sys

from radiusd.admin import accounts, audit, clients, nas, rates, routing, seeds
from radiusd.cli_output import actor_from_args, common_options, emit, emit_page, settings_from_args, store_from_args
from radiusd.commands import partitions as cdr_partitions
from radiusd.db import current_store_version, safe_url
from radiusd.errors import UserError

CONTEXT = "cli"


# ---------------------------------------------------------------- plumbing

def _in_transaction(args, work, *, create: bool = False):
    """Open the store, run work(session) in one transaction, close the store."""
    with store_from_args(args, create=create) as (_settings, _engine, sessions), sessions.begin() as session:
        return work(session)


def _actor(args) -> str:
    return actor_from_args(args)


def _json(args) -> bool:
    return bool(getattr(args, "json", False))


def _given(args, names) -> dict:
    """The options the user actually gave (None = not given)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _read_secret_stdin(field: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise UserError(f"{field}: nothing on standard input (--{field}-stdin)")
    return line.rstrip("\r\n")


def _sub(group, name: str, help_: str, func) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_, description=help_, parents=[common_options()])
    parser.set_defaults(func=func)
    return parser


def _group(subparsers, name: str, help_: str):
    parser = subparsers.add_parser(name, help=help_, description=help_)
    group = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return group


# ---------------------------------------------------------------- db / seed

def _db_init(args) -> int:
    import datetime as dt

    from radiusd.logging_setup import configure
    from radiusd.store.partitions import INIT_MONTHS_AHEAD, ensure_cdr_partitions

    configure("warning")  # stdout carries the result (--json); warnings go to stderr
    url = settings_from_args(args).database_url

    def work(session):
        from radiusd.store.sealing import key_path, sealing_ring

        sealing_ring(session)  # the key file that seals passwords and NAS secrets (made 0600 if new)
        # PostgreSQL: this month's and next month's CDR partitions, before any traffic
        report = ensure_cdr_partitions(session, dt.datetime.now(dt.timezone.utc), INIT_MONTHS_AHEAD, attempts=5)
        return {"database": safe_url(url), "store_version": current_store_version(session),
                "cdr_partitions": sorted(report.created + report.present), "key_file": str(key_path(session))}

    result = _in_transaction(args, work, create=True)
    if _json(args):
        emit(result, True)
    else:
        print(f"store ready: {result['database']} (store version {result['store_version']}); "
              f"secrets key file {result['key_file']} (back it up apart from the store)")
        if result["cdr_partitions"]:
            print(f"CDR partitions: {', '.join(result['cdr_partitions'])}")
    return 0


def _db_schema(args) -> int:
    from radiusd.store.ddl import postgresql_ddl

    sys.stdout.write(postgresql_ddl())
    return 0


def _seed_load(args) -> int:
    source = seeds.read_seed(args.file)
    loaded = _in_transaction(
        args, lambda s: seeds.load_seed_text(s, source, args.file, actor=_actor(args), context="seed"))
    if _json(args):
        emit({"file": args.file, "rows": loaded, "total": sum(loaded.values())}, True)
    else:
        emit([{"table": t, "rows": n} for t, n in loaded.items()], False, ["table", "rows"])
        print(f"loaded {sum(loaded.values())} rows from {args.file}")
    return 0


# ---------------------------------------------------------------- clients

MAX_CALL_DURATION_HELP = (
    "longest call answered, in seconds (none = no limit at this level). The Accept answers the smallest "
    "of account, client and [limits] max_call_duration, shortened to what the balance buys; a "
    "prepaid client's balance holds that worst case per call in progress, so a smaller value lets "
    "the balance carry more simultaneous calls")

CLIENT_OPTIONS = ("active", "credit_limit", "currency", "orig_rate_table", "term_rate_table", "routing_plan",
                  "capacity", "max_call_duration", "notes")
CLIENT_COLUMNS = ["id", "name", "active", "balance", "credit_limit", "currency", "orig_rate_table",
                  "term_rate_table", "routing_plan", "capacity", "accounts"]


def _client_options(parser, *, adding: bool) -> None:
    parser.add_argument("--active", metavar="yes|no")
    if adding:
        parser.add_argument("--balance", metavar="AMOUNT", help="opening balance (default 0)")
    else:
        parser.add_argument("--name", help="rename the client")
        # accepted only to explain that balances move through `client topup`
        parser.add_argument("--balance", help=argparse.SUPPRESS)
    parser.add_argument("--credit-limit", dest="credit_limit", metavar="AMOUNT|unlimited",
                        help="how far below zero the balance may go (default 0)")
    parser.add_argument("--currency", metavar="CODE")
    parser.add_argument("--orig-rate-table", dest="orig_rate_table", metavar="TABLE|none")
    parser.add_argument("--term-rate-table", dest="term_rate_table", metavar="TABLE|none")
    parser.add_argument("--routing-plan", dest="routing_plan", metavar="PLAN|none")
    parser.add_argument("--capacity", metavar="N|none", help="simultaneous calls for the whole client")
    parser.add_argument("--max-call-duration", dest="max_call_duration", metavar="SECONDS|none",
                        help=MAX_CALL_DURATION_HELP)
    parser.add_argument("--notes")


def _client_add(args) -> int:
    values = _given(args, CLIENT_OPTIONS + ("balance",))
    record = _in_transaction(args, lambda s: clients.create_client(
        s, actor=_actor(args), context=CONTEXT, name=args.name, **values))
    emit(record, _json(args))
    return 0


def _client_update(args) -> int:
    values = _given(args, CLIENT_OPTIONS + ("name", "balance"))
    if not values:
        raise UserError("client update: no changes given (see --help)")
    record = _in_transaction(args, lambda s: clients.update_client(
        s, args.client, actor=_actor(args), context=CONTEXT, **values))
    emit(record, _json(args))
    return 0


def _client_show(args) -> int:
    emit(_in_transaction(args, lambda s: clients.show_client(s, args.client)), _json(args))
    return 0


def _client_list(args) -> int:
    emit(_in_transaction(args, clients.list_clients), _json(args), CLIENT_COLUMNS)
    return 0


def _client_delete(args) -> int:
    emit(_in_transaction(args, lambda s: clients.delete_client(s, args.client, actor=_actor(args), context=CONTEXT)),
         _json(args))
    return 0


def _client_topup(args) -> int:
    result = _in_transaction(args, lambda s: clients.adjust_balance(
        s, args.client, args.amount, actor=_actor(args), context=CONTEXT, notes=args.notes or ""))
    emit(result, _json(args))
    return 0


# ---------------------------------------------------------------- accounts

ACCOUNT_OPTIONS = tuple(f for f in accounts.ACCOUNT_FIELDS if f != "name")
ACCOUNT_COLUMNS = ["id", "name", "client", "status", "ident_by", "identity", "tech_prefix", "gateways", "orig",
                   "term"]


def _account_options(parser, *, adding: bool) -> None:
    general = parser.add_argument_group("general")
    if not adding:
        general.add_argument("--name", help="rename the account (for ident-by name: the login)")
    general.add_argument("--client", help="client name or id" + (" (required)" if adding else ""))
    general.add_argument("--ident-by", dest="ident_by", metavar="ip|name|ani",
                         help="how calls are matched to the account" + (
                             "; inferred when only one of --ips, --password, --ani is given" if adding else ""))
    general.add_argument("--ips", metavar="LIST", help="';'-separated addresses and CIDRs (replaces the list)")
    general.add_argument("--tech-prefix", dest="tech_prefix", metavar="DIGITS")
    general.add_argument("--password", help="login password (prefer --password-stdin: the command line is visible)")
    general.add_argument("--password-stdin", dest="password_stdin", action="store_true",
                         help="read the password from the first line of standard input")
    general.add_argument("--ani", metavar="NUMBER")
    general.add_argument("--gateways", metavar="NAS;NAS", help="NAS names/ids the account is valid on; '' = all")
    general.add_argument("--notes")
    general.add_argument("--active", metavar="yes|no")
    general.add_argument("--max-call-duration", dest="max_call_duration", metavar="SECONDS|none",
                         help=MAX_CALL_DURATION_HELP)
    orig = parser.add_argument_group("originator (the account sends calls to us)")
    orig.add_argument("--orig-enabled", dest="orig_enabled", metavar="yes|no")
    orig.add_argument("--orig-rate-table", dest="orig_rate_table", metavar="TABLE|none")
    orig.add_argument("--orig-routing-plan", dest="orig_routing_plan", metavar="PLAN|none")
    orig.add_argument("--orig-tag", dest="orig_tag", metavar="TAG")
    orig.add_argument("--orig-capacity", dest="orig_capacity", metavar="N|none")
    term = parser.add_argument_group("terminator (we send calls to the account)")
    term.add_argument("--term-enabled", dest="term_enabled", metavar="yes|no")
    term.add_argument("--term-rate-table", dest="term_rate_table", metavar="TABLE|none")
    term.add_argument("--term-tag", dest="term_tag", metavar="TAG")
    term.add_argument("--term-capacity", dest="term_capacity", metavar="N|none")
    term.add_argument("--term-protocol", dest="term_protocol", metavar="sip|h323")
    term.add_argument("--term-proxy", dest="term_proxy", metavar="HOST")
    term.add_argument("--term-port", dest="term_port", metavar="PORT")


def _account_values(args, *, adding: bool) -> dict:
    values = _given(args, ACCOUNT_OPTIONS + (() if adding else ("name",)))
    if args.password_stdin:
        values["password"] = _read_secret_stdin("password")
    return values


def _side(enabled: bool, parts: list[tuple[str, object]]) -> str:
    if not enabled:
        return "off"
    return " ".join(["on"] + [f"{k}={v}" for k, v in parts if v not in (None, "")])


def _account_row(record: dict) -> dict:
    identity = {"ip": ";".join(record["ips"]), "name": "login " + record["name"],
                "ani": record["ani"] or ""}[record["ident_by"]]
    return {
        **record,
        "identity": identity,
        "gateways": ";".join(record["gateways"]) or "(all)",
        "orig": _side(record["orig_enabled"], [("rt", record["orig_rate_table"]),
                                               ("plan", record["orig_routing_plan"]),
                                               ("tag", record["orig_tag"]), ("cap", record["orig_capacity"])]),
        "term": _side(record["term_enabled"], [("rt", record["term_rate_table"]), ("tag", record["term_tag"]),
                                               ("cap", record["term_capacity"]), ("proto", record["term_protocol"]),
                                               ("proxy", record["term_proxy"]), ("port", record["term_port"])]),
    }


def _emit_accounts(args, records: list[dict]) -> None:
    if _json(args):
        emit(records, True)
    else:
        emit([_account_row(r) for r in records], False, ACCOUNT_COLUMNS)


def _account_add(args) -> int:
    values = _account_values(args, adding=True)
    record = _in_transaction(args, lambda s: accounts.create_account(
        s, actor=_actor(args), context=CONTEXT, name=args.name, **values))
    emit(record, _json(args))
    return 0


def _account_update(args) -> int:
    values = _account_values(args, adding=False)
    if not values:
        raise UserError("account update: no changes given (see --help)")
    record = _in_transaction(args, lambda s: accounts.update_account(
        s, args.account, actor=_actor(args), context=CONTEXT, **values))
    emit(record, _json(args))
    return 0


def _account_show(args) -> int:
    emit(_in_transaction(args, lambda s: accounts.show_account(s, args.account)), _json(args))
    return 0


def _account_list(args) -> int:
    _emit_accounts(args, _in_transaction(args, lambda s: accounts.list_accounts(s, client=args.client)))
    return 0


SEARCH_OPTIONS = ("client", "ip", "name", "ani", "tech_prefix", "tag", "rate_table", "active", "gateway",
                  "routing_plan")


def _account_search(args) -> int:
    filters = _given(args, SEARCH_OPTIONS)
    keyword = args.keyword_option if args.keyword_option is not None else args.keyword
    if keyword is not None:
        filters["keyword"] = keyword
    if not filters:
        raise UserError("account search: give a keyword or at least one filter (see --help)")
    _emit_accounts(args, _in_transaction(args, lambda s: accounts.search_accounts(s, **filters)))
    return 0


def _account_deactivate(args) -> int:
    record = _in_transaction(args, lambda s: accounts.deactivate_account(
        s, args.account, actor=_actor(args), context=CONTEXT))
    emit(record, _json(args))
    return 0


def _account_delete(args) -> int:
    if not args.yes:
        raise UserError(f"account: deleting removes its CDRs and active calls and refunds their cost; "
                        f"repeat with --yes to confirm ({args.account})")
    result = _in_transaction(args, lambda s: accounts.delete_account(
        s, args.account, actor=_actor(args), context=CONTEXT))
    emit(result, _json(args))
    return 0


# ---------------------------------------------------------------- NAS

NAS_OPTIONS = ("address", "secret", "message_authenticator", "require_message_authenticator", "dialect",
               "caller_address_source", "active", "notes")
NAS_COLUMNS = ["id", "name", "address", "secret", "dialect", "caller_address_source",
               "message_authenticator", "message_authenticator_learned", "active"]
MESSAGE_AUTHENTICATOR_HELP = (
    "Access-Requests without Message-Authenticator (BlastRADIUS): yes = always drop them; "
    "no = accept them; auto (default) = accept them until this NAS sends one valid "
    "Message-Authenticator, then require it (remembered in the store; `nas show` says which). "
    "Whatever the policy, a Message-Authenticator present is verified and a request carrying "
    "Proxy-State without one is dropped. auto suits switches that cannot send it (Kamailio 5.6 "
    "with radcli, Yate's yradius); choose yes for switches that always do. Setting the policy "
    "again forgets what auto learned")


def _nas_options(parser, *, adding: bool) -> None:
    if not adding:
        parser.add_argument("--name", help="rename the NAS")
    parser.add_argument("--address", metavar="IP|CIDR", help="source address of its RADIUS packets"
                        + (" (required)" if adding else ""))
    parser.add_argument("--secret", help="shared secret (prefer --secret-stdin: the command line is visible)")
    parser.add_argument("--secret-stdin", dest="secret_stdin", action="store_true",
                        help="read the shared secret from the first line of standard input")
    parser.add_argument("--message-authenticator", dest="message_authenticator", metavar="yes|no|auto",
                        help=MESSAGE_AUTHENTICATOR_HELP)
    # the old boolean flag: yes/no still mean the policies of those names
    parser.add_argument("--require-message-authenticator", dest="require_message_authenticator",
                        metavar="yes|no", help=argparse.SUPPRESS)
    parser.add_argument("--dialect", metavar="|".join(nas.DIALECTS))
    parser.add_argument("--caller-address-source", dest="caller_address_source",
                        metavar="|".join(nas.CALLER_ADDRESS_SOURCES))
    parser.add_argument("--active", metavar="yes|no")
    parser.add_argument("--notes")


def _nas_values(args, *, adding: bool) -> dict:
    values = _given(args, NAS_OPTIONS + (() if adding else ("name",)))
    if args.secret_stdin:
        values["secret"] = _read_secret_stdin("secret")
    return values


def _nas_add(args) -> int:
    values = _nas_values(args, adding=True)
    record = _in_transaction(args, lambda s: nas.create_nas(s, actor=_actor(args), context=CONTEXT,
                                                             name=args.name, **values))
    emit(record, _json(args))
    return 0


def _nas_update(args) -> int:
    values = _nas_values(args, adding=False)
    if not values:
        raise UserError("nas update: no changes given (see --help)")
    record = _in_transaction(args, lambda s: nas.update_nas(s, args.nas, actor=_actor(args), context=CONTEXT,
                                                             **values))
    emit(record, _json(args))
    return 0


def _nas_show(args) -> int:
    emit(_in_transaction(args, lambda s: nas.show_nas(s, args.nas)), _json(args))
    return 0


def _nas_list(args) -> int:
    emit(_in_transaction(args, nas.list_nas), _json(args), NAS_COLUMNS)
    return 0


def _nas_delete(args) -> int:
    emit(_in_transaction(args, lambda s: nas.delete_nas(s, args.nas, actor=_actor(args), context=CONTEXT)),
         _json(args))
    return 0


# ---------------------------------------------------------------- rate tables and rates

RATE_COLUMNS = ["prefix", "description", "price_per_minute", "connection_fee", "minimum_seconds",
                "interval_seconds", "grace_seconds", "effective_from", "effective_until"]


def _ratetable_add(args) -> int:
    record = _in_transaction(args, lambda s: rates.create_rate_table(
        s, actor=_actor(args), context=CONTEXT, name=args.name, currency=args.currency or "USD",
        notes=args.notes or ""))
    emit(record, _json(args))
    return 0


def _ratetable_update(args) -> int:
    values = _given(args, ("name", "currency", "notes"))
    if not values:
        raise UserError("ratetable update: no changes given (see --help)")
    emit(_in_transaction(args, lambda s: rates.update_rate_table(s, args.table, actor=_actor(args), context=CONTEXT,
                                                                 **values)), _json(args))
    return 0


def _ratetable_delete(args) -> int:
    emit(_in_transaction(args, lambda s: rates.delete_rate_table(s, args.table, actor=_actor(args), context=CONTEXT)),
         _json(args))
    return 0


def _ratetable_list(args) -> int:
    emit(_in_transaction(args, rates.list_rate_tables), _json(args), ["id", "name", "currency", "rates", "notes"])
    return 0


def _ratetable_show(args) -> int:
    record = _in_transaction(args, lambda s: rates.show_rate_table(s, args.table))
    if _json(args):
        emit(record, True)
    else:
        rate_list = record.pop("rate_list")
        emit(record, False)
        print()
        emit(rate_list, False, RATE_COLUMNS)
    return 0


def _rates_import(args) -> int:
    result = _in_transaction(args, lambda s: rates.import_rates(
        s, args.table, args.file, actor=_actor(args), context=CONTEXT, replace=args.replace))
    emit(result, _json(args))
    return 0


def _rates_add(args) -> int:
    values = _given(args, tuple(c for c in rates.CSV_COLUMNS if c != "prefix"))
    result = _in_transaction(args, lambda s: rates.add_rate(
        s, args.table, actor=_actor(args), context=CONTEXT, prefix=args.prefix, **values))
    emit(result, _json(args))
    return 0


def _rates_update(args) -> int:
    values = _given(args, rates.RATE_UPDATABLE)
    if not values:
        raise UserError("rates update: no changes given (see --help)")
    result = _in_transaction(args, lambda s: rates.update_rate(
        s, args.table, actor=_actor(args), context=CONTEXT, prefix=args.prefix, effective_from=args.effective_from,
        **values))
    emit(result, _json(args))
    return 0


def _rates_delete(args) -> int:
    result = _in_transaction(args, lambda s: rates.delete_rate(
        s, args.table, actor=_actor(args), context=CONTEXT, prefix=args.prefix, effective_from=args.effective_from))
    emit(result if _json(args) else {"rate_table": result["rate_table"], **result["deleted"]}, _json(args))
    return 0


def _rate_fields(parser, *, required_price: bool) -> None:
    parser.add_argument("--price", dest="price_per_minute", required=required_price, metavar="PER_MINUTE")
    parser.add_argument("--connection-fee", dest="connection_fee", metavar="AMOUNT")
    parser.add_argument("--minimum", dest="minimum_seconds", metavar="SECONDS")
    parser.add_argument("--interval", dest="interval_seconds", metavar="SECONDS")
    parser.add_argument("--grace", dest="grace_seconds", metavar="SECONDS")
    parser.add_argument("--effective-until", dest="effective_until", metavar="DATE|none")
    parser.add_argument("--description")


# ---------------------------------------------------------------- routing

def _routing_add(args) -> int:
    record = _in_transaction(args, lambda s: routing.create_routing_plan(
        s, actor=_actor(args), context=CONTEXT, name=args.name, notes=args.notes or ""))
    emit(record, _json(args))
    return 0


def _routing_show(args) -> int:
    record = _in_transaction(args, lambda s: routing.show_routing_plan(s, args.plan))
    if _json(args):
        emit(record, True)
    else:
        rules = record.pop("rule_list")
        emit(record, False)
        print()
        emit(rules, False, ["id", "priority", "prefix", "terminator", "share"])
    return 0


def _routing_list(args) -> int:
    emit(_in_transaction(args, routing.list_routing_plans), _json(args), ["id", "name", "rules", "notes"])
    return 0


def _routing_delete(args) -> int:
    emit(_in_transaction(args, lambda s: routing.delete_routing_plan(s, args.plan, actor=_actor(args),
                                                                     context=CONTEXT)), _json(args))
    return 0


def _routing_rule_delete(args) -> int:
    result = _in_transaction(args, lambda s: routing.delete_rule(s, args.plan, args.rule, actor=_actor(args),
                                                                 context=CONTEXT))
    emit(result if _json(args) else {"routing_plan": result["routing_plan"], **result["deleted"]}, _json(args))
    return 0


def _routing_rule_add(args) -> int:
    record = _in_transaction(args, lambda s: routing.add_rule(
        s, args.plan, actor=_actor(args), context=CONTEXT, terminator=args.terminator,
        prefix=args.prefix if args.prefix is not None else "",
        priority=args.priority if args.priority is not None else 0,
        share=args.share if args.share is not None else 100))
    emit(record, _json(args))
    return 0


# ---------------------------------------------------------------- audit

def _audit_list(args) -> int:
    filters = dict(object_type=args.object_type, object_id=args.object_id, actor=args.by, since=args.since,
                   until=args.until)
    rows, total = _in_transaction(args, lambda s: (audit.list_entries(s, **filters, limit=args.limit),
                                                   audit.count_entries(s, **filters)))
    emit_page(rows, total, _json(args), ["id", "at", "actor", "context", "action", "object_type", "object_id",
                                         "object_name", "changes"])
    return 0


# ---------------------------------------------------------------- registration

def register(subparsers) -> None:
    # db
    db = _group(subparsers, "db", "the store itself")
    _sub(db, "init", "create the schema in DATABASE_URL (no-op when it exists)", _db_init)
    _sub(db, "schema", "print the PostgreSQL DDL (schema/postgresql.sql)", _db_schema)
    cdr_partitions.add_db_command(_sub(db, "partitions", cdr_partitions.HELP, cdr_partitions.cmd_db_partitions))

    # seed
    seed = _group(subparsers, "seed", "SQL seed files")
    p = _sub(seed, "load", "load a .sql seed file in one transaction (all rows or none)", _seed_load)
    p.add_argument("file", metavar="FILE")

    # client
    client = _group(subparsers, "client", "clients: customers and vendors")
    p = _sub(client, "add", "add a client", _client_add)
    p.add_argument("name", metavar="NAME")
    _client_options(p, adding=True)
    p = _sub(client, "update", "change a client (balance: use topup)", _client_update)
    p.add_argument("client", metavar="CLIENT")
    _client_options(p, adding=False)
    p = _sub(client, "show", "show a client", _client_show)
    p.add_argument("client", metavar="CLIENT")
    _sub(client, "list", "list clients", _client_list)
    p = _sub(client, "delete", "delete a client without accounts, CDRs or calls (audited)", _client_delete)
    p.add_argument("client", metavar="CLIENT")
    p = _sub(client, "topup", "record a payment (or, negative, a correction) on the balance", _client_topup)
    p.add_argument("client", metavar="CLIENT")
    p.add_argument("amount", metavar="AMOUNT")
    p.add_argument("--notes", help="e.g. the payment reference")

    # account
    account = _group(subparsers, "account", "accounts: how a client's calls are recognised")
    p = _sub(account, "add", "add an account", _account_add)
    p.add_argument("name", metavar="NAME")
    _account_options(p, adding=True)
    p = _sub(account, "update", "change an account (--ips and --gateways replace the list)", _account_update)
    p.add_argument("account", metavar="ACCOUNT")
    _account_options(p, adding=False)
    p = _sub(account, "show", "show an account", _account_show)
    p.add_argument("account", metavar="ACCOUNT")
    p = _sub(account, "list", "list accounts (STATUS: active, or why its calls are refused)", _account_list)
    p.add_argument("--client")
    p = _sub(account, "search", "find accounts (all given filters must match)", _account_search)
    p.add_argument("keyword", nargs="?", metavar="KEYWORD", help="quick search in name, ANI, IPs, notes, client")
    p.add_argument("--keyword", dest="keyword_option", metavar="KEYWORD")
    p.add_argument("--client")
    p.add_argument("--ip", metavar="ADDRESS|CIDR", help="accounts whose networks contain this address")
    p.add_argument("--name")
    p.add_argument("--ani")
    p.add_argument("--tech-prefix", dest="tech_prefix")
    p.add_argument("--tag", help="originator or terminator tag")
    p.add_argument("--rate-table", dest="rate_table", help="originator or terminator rate table")
    p.add_argument("--active", metavar="yes|no",
                   help="yes: accounts that can carry calls (status active); no: the others")
    p.add_argument("--gateway", metavar="NAS", help="accounts valid on this NAS (listed, or valid on every NAS)")
    p.add_argument("--routing-plan", dest="routing_plan", metavar="PLAN",
                   help="accounts routed by this plan (their own originator plan, else their client's)")
    p = _sub(account, "deactivate", "untick originator and terminator (keeps everything)", _account_deactivate)
    p.add_argument("account", metavar="ACCOUNT")
    p = _sub(account, "delete", "delete an account, its CDRs and active calls; refund the CDRs' cost",
             _account_delete)
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")

    # nas
    nas_group = _group(subparsers, "nas", "NAS: switches and gateways talking RADIUS to us")
    p = _sub(nas_group, "add", "add a NAS", _nas_add)
    p.add_argument("name", metavar="NAME")
    _nas_options(p, adding=True)
    p = _sub(nas_group, "update", "change a NAS", _nas_update)
    p.add_argument("nas", metavar="NAS")
    _nas_options(p, adding=False)
    p = _sub(nas_group, "show", "show a NAS (never its secret)", _nas_show)
    p.add_argument("nas", metavar="NAS")
    _sub(nas_group, "list", "list NAS", _nas_list)
    p = _sub(nas_group, "delete", "delete a NAS", _nas_delete)
    p.add_argument("nas", metavar="NAS")

    # ratetable
    ratetable = _group(subparsers, "ratetable", "rate tables")
    p = _sub(ratetable, "add", "add a rate table", _ratetable_add)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--currency", metavar="CODE", help="default USD")
    p.add_argument("--notes")
    _sub(ratetable, "list", "list rate tables", _ratetable_list)
    p = _sub(ratetable, "show", "show a rate table and its rates", _ratetable_show)
    p.add_argument("table", metavar="TABLE")
    p = _sub(ratetable, "update", "rename a rate table, change its currency or notes", _ratetable_update)
    p.add_argument("table", metavar="TABLE")
    p.add_argument("--name", help="the new name")
    p.add_argument("--currency", metavar="CODE")
    p.add_argument("--notes")
    p = _sub(ratetable, "delete", "delete a rate table and its rates (refused while clients, accounts or calls "
             "use it)", _ratetable_delete)
    p.add_argument("table", metavar="TABLE")

    # rates
    rates_group = _group(subparsers, "rates", "rates of a rate table")
    p = _sub(rates_group, "import", "import a CSV rate deck (all rows or none)", _rates_import)
    p.add_argument("table", metavar="TABLE")
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--replace", action="store_true", help="drop the table's existing rates first")
    p = _sub(rates_group, "add", "add one rate", _rates_add)
    p.add_argument("table", metavar="TABLE")
    p.add_argument("--prefix", required=True, help="destination prefix ('' = any)")
    p.add_argument("--effective-from", dest="effective_from", metavar="DATE")
    _rate_fields(p, required_price=True)
    for name, help_, func in (("update", "change one rate (--prefix, and --effective-from if the prefix has several)",
                               _rates_update),
                              ("delete", "delete one rate (--prefix, and --effective-from if the prefix has several)",
                               _rates_delete)):
        p = _sub(rates_group, name, help_, func)
        p.add_argument("table", metavar="TABLE")
        p.add_argument("--prefix", required=True, help="destination prefix of the rate ('' = any)")
        p.add_argument("--effective-from", dest="effective_from", metavar="DATE",
                       help="start of the rate, to choose among several rates of the prefix")
        if name == "update":
            _rate_fields(p, required_price=False)

    # routing
    routing_group = _group(subparsers, "routing", "routing plans")
    p = _sub(routing_group, "add", "add a routing plan", _routing_add)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--notes")
    p = _sub(routing_group, "show", "show a routing plan and its rules", _routing_show)
    p.add_argument("plan", metavar="PLAN")
    _sub(routing_group, "list", "list routing plans", _routing_list)
    p = _sub(routing_group, "delete", "delete a routing plan and its rules (refused while clients or accounts "
             "use it)", _routing_delete)
    p.add_argument("plan", metavar="PLAN")
    p = _sub(routing_group, "rule-add", "add a rule: calls to PREFIX go to a terminator account",
             _routing_rule_add)
    p.add_argument("plan", metavar="PLAN")
    p.add_argument("--terminator", required=True, metavar="ACCOUNT")
    p.add_argument("--prefix", help="destination prefix ('' = any, the default)")
    p.add_argument("--priority", metavar="N", help="lower first (default 0)")
    p.add_argument("--share", metavar="PERCENT", help="default 100")
    p = _sub(routing_group, "rule-delete", "delete one rule of a plan", _routing_rule_delete)
    p.add_argument("plan", metavar="PLAN")
    p.add_argument("rule", metavar="RULE_ID", help="the rule's id, as `routing show` lists it")

    # audit
    audit_group = _group(subparsers, "audit", "the audit log of admin changes")
    p = _sub(audit_group, "list", "list audit entries (oldest first)", _audit_list)
    p.add_argument("--object-type", dest="object_type",
                   metavar="client|account|nas|rate_table|routing_plan|seed")
    p.add_argument("--object-id", dest="object_id", metavar="ID")
    p.add_argument("--by", "--by-actor", dest="by", metavar="ACTOR", help="changes made by this actor")
    p.add_argument("--since", metavar="DATE", help="ISO-8601 date or date-time (inclusive)")
    p.add_argument("--until", metavar="DATE", help="ISO-8601 date or date-time (exclusive)")
    p.add_argument("--limit", metavar="N", help="only the newest N")
