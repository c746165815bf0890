"""FreeRADIUS 3.2 (Debian) with rlm_sql/PostgreSQL as the reference server of the benchmark.

Generates a minimal raddb: PAP from `radcheck` (authorize {sql; pap}), stock `radacct`
accounting (preacct {acct_unique}, accounting {sql}), one client 127.0.0.1 with the same
secret as radiusd's NAS, stock thread and SQL-pool sizes. The tables come from Debian's
`mods-config/sql/main/postgresql/schema.sql`, in their own database on the same PostgreSQL.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

STOCK = Path("/etc/freeradius/3.0")
SCHEMA = STOCK / "mods-config/sql/main/postgresql/schema.sql"

RADIUSD_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {run}
raddbdir = {raddb}
radacctdir = {run}/radacct
name = freeradius
confdir = ${{raddbdir}}
modconfdir = {stock}/mods-config
certdir = ${{confdir}}/certs
cadir = ${{confdir}}/certs
run_dir = {run}
db_dir = ${{raddbdir}}
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/${{name}}.pid
correct_escapes = true
max_request_time = 30
cleanup_delay = 5
max_requests = 16384
hostname_lookups = no
log {{
    destination = files
    colourise = no
    file = ${{logdir}}/radius.log
    syslog_facility = daemon
    stripped_names = no
    auth = no
}}
checkrad = ${{sbindir}}/checkrad
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = yes
}}
# stock Debian sizes
thread pool {{
    start_servers = 5
    max_servers = 32
    min_spare_servers = 3
    max_spare_servers = 10
    max_requests_per_server = 0
    auto_limit_acct = no
}}
policy {{
    # as policy.d/accounting `acct_unique` (without the Class branch): the radacct key
    acct_unique {{
        update request {{
            &Acct-Unique-Session-Id := "%{{md5:%{{User-Name}},%{{Acct-Session-ID}},%{{%{{NAS-IPv6-Address}}:-%{{NAS-IP-Address}}}},%{{NAS-Identifier}},%{{NAS-Port-ID}},%{{NAS-Port}}}}"
        }}
    }}
}}
modules {{
    $INCLUDE mods-enabled/
}}
instantiate {{
}}
$INCLUDE clients.conf
$INCLUDE sites-enabled/
"""

CLIENTS_CONF = """\
client localhost {{
    ipaddr = 127.0.0.1
    proto = udp
    secret = "{secret}"
    require_message_authenticator = yes
    nas_type = other
}}
"""

SITE = """\
server bench {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {auth_port}
    }}
    listen {{
        type = acct
        ipaddr = 127.0.0.1
        port = {acct_port}
    }}
    authorize {{
        sql
        pap
    }}
    authenticate {{
        Auth-Type PAP {{
            pap
        }}
    }}
    preacct {{
        acct_unique
    }}
    accounting {{
        sql
    }}
    post-auth {{
    }}
}}
"""

SQL_MOD = """\
sql {{
    dialect = "postgresql"
    driver = "rlm_sql_postgresql"
    postgresql {{
        send_application_name = yes
    }}
    server = "{host}"
    port = {port}
    login = "{user}"
    password = "{password}"
    radius_db = "{dbname}"
    acct_table1 = "radacct"
    acct_table2 = "radacct"
    postauth_table = "radpostauth"
    authcheck_table = "radcheck"
    groupcheck_table = "radgroupcheck"
    authreply_table = "radreply"
    groupreply_table = "radgroupreply"
    usergroup_table = "radusergroup"
    delete_stale_sessions = yes
    read_clients = no
    client_table = "nas"
    group_attribute = "SQL-Group"
    # stock pool: follows the thread pool
    pool {{
        start = ${{thread[pool].start_servers}}
        min = ${{thread[pool].min_spare_servers}}
        max = ${{thread[pool].max_servers}}
        spare = ${{thread[pool].max_spare_servers}}
        uses = 0
        retry_delay = 30
        lifetime = 0
        idle_timeout = 60
    }}
    $INCLUDE ${{modconfdir}}/${{.:name}}/main/${{dialect}}/queries.conf
}}
"""

PAP_MOD = """\
pap {
    normalise = yes
}
"""

# %{md5:...} (acct_unique) and %{tolower:...} (queries.conf) come from rlm_expr
EXPR_MOD = """\
expr {
    safe_characters = "@abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_: /"
}
"""


def binary() -> str | None:
    return shutil.which("freeradius") or (
        "/usr/sbin/freeradius" if os.path.exists("/usr/sbin/freeradius") else None)


def write_raddb(directory: str | Path, *, auth_port: int, acct_port: int, secret: str, db: dict) -> Path:
    """Write the raddb into `directory`; `db` has host, port, user, password, dbname."""
    raddb = Path(directory)
    run = raddb / "run"
    for sub in ("mods-enabled", "sites-enabled", "run/radacct"):
        (raddb / sub).mkdir(parents=True, exist_ok=True)
    (raddb / "radiusd.conf").write_text(RADIUSD_CONF.format(run=run, raddb=raddb, stock=STOCK))
    (raddb / "clients.conf").write_text(CLIENTS_CONF.format(secret=secret))
    (raddb / "sites-enabled" / "bench").write_text(SITE.format(auth_port=auth_port, acct_port=acct_port))
    (raddb / "mods-enabled" / "sql").write_text(SQL_MOD.format(**db))
    (raddb / "mods-enabled" / "pap").write_text(PAP_MOD)
    (raddb / "mods-enabled" / "expr").write_text(EXPR_MOD)
    (raddb / "dictionary").write_text("# local additions: none\n")
    for path in [raddb, *raddb.rglob("*")]:
        os.chmod(path, 0o750 if path.is_dir() else 0o640)
    return raddb


def load_schema(url: str) -> None:
    """Create the stock FreeRADIUS tables in the (empty) database at `url`."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(SCHEMA.read_text())
    finally:
        conn.close()


def load_radcheck(url: str, logins) -> int:
    """One `Cleartext-Password :=` row per (login, password), loaded with COPY."""
    import psycopg2

    buf = io.StringIO()
    n = 0
    for login, password in logins:
        buf.write(f"{login}\tCleartext-Password\t:=\t{password}\n")
        n += 1
    buf.seek(0)
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.copy_from(buf, "radcheck", columns=("username", "attribute", "op", "value"))
            cur.execute("ANALYZE radcheck")
    finally:
        conn.close()
    return n


def check_config(raddb: Path) -> None:
    out = subprocess.run([binary(), "-C", "-d", str(raddb)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"freeradius -C failed:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}")


def start(raddb: Path) -> subprocess.Popen:
    """FreeRADIUS in the foreground (-f) with our raddb; the caller stops it with `stop`."""
    log = open(raddb / "run" / "stdout.log", "w")
    return subprocess.Popen([binary(), "-f", "-d", str(raddb)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen, raddb: Path, timeout: float = 20.0) -> None:
    log = raddb / "run" / "radius.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"freeradius exited with {proc.returncode}:\n{tail}")
        if log.exists() and "Ready to process requests" in log.read_text():
            return
        time.sleep(0.2)
    raise RuntimeError("freeradius did not become ready")
