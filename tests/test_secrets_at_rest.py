"""Secrets at rest: account passwords and NAS secrets are sealed in the store (both stores), the
server still authorizes PAP/CHAP/Digest and checks packets with them, rotation re-seals everything,
and a missing or wrong key file is one clear line."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyrad.packet import AccessAccept, AccessRequest, AccountingResponse, AuthPacket
from sqlalchemy import select, text

from radius_packets import DICTIONARY, SECRET, acct_request
from radius_server import ServerProcess, exchange, seeded_store
from radiusd.cli import main
from radiusd.db import make_engine, open_store
from radiusd.models import Base
from radiusd.secrets_at_rest import (
    CannotOpen,
    KeyRing,
    nas_secret_place,
    open_sealed,
    read_key_file,
    seal,
    write_key_file,
)
from radiusd.store.snapshot_loader import load_snapshot_from

CLEAR = ("Edge-Secret-7f3a", "Alice-Pass-91c2", "testing123", "s3cret-pass")  # ours + the demo seed's


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    path = tmp_path / "keys" / "radiusd.key"
    monkeypatch.setenv("RADIUSD_KEY_FILE", str(path))
    return path


def _dump(url: str) -> str:
    """Every column of every table as text: what a dump or a backup would carry."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return "\n".join(repr(tuple(row)) for table in Base.metadata.sorted_tables
                             for row in conn.execute(select(table)))
    finally:
        engine.dispose()


def test_nothing_secret_is_stored_in_clear(store_url, key_file, capsys):
    assert main(["--database-url", store_url, "db", "init"]) == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    seeded_store(store_url)  # the demo seed carries clear values: sealed on load
    assert main(["--database-url", store_url, "nas", "add", "edge7", "--address", "192.0.2.77",
                 "--secret", "Edge-Secret-7f3a"]) == 0
    assert main(["--database-url", store_url, "account", "add", "alice", "--client", "Acme Telecom",
                 "--password", "Alice-Pass-91c2"]) == 0
    capsys.readouterr()
    dump = _dump(store_url)
    assert "rs1:" in dump and "alice" in dump and "edge7" in dump
    for clear in CLEAR:
        assert clear not in dump, f"{clear!r} stored in clear"
    db_file = store_url.split("sqlite:///", 1)[1] if store_url.startswith("sqlite") else None
    if db_file:  # not even in the SQLite file's free pages or WAL
        raw = b"".join(Path(p).read_bytes() for p in (db_file, db_file + "-wal") if os.path.exists(p))
        assert not any(clear.encode() in raw for clear in CLEAR)
    # ... and the server's snapshot (RAM only) has them clear
    engine, sessions = open_store(store_url, create=False)
    try:
        snapshot = load_snapshot_from(sessions)
    finally:
        engine.dispose()
    assert {n.name: n.secret for n in snapshot.nas.values()}["edge7"] == b"Edge-Secret-7f3a"
    assert {a.name: a.password for a in snapshot.accounts.values()}["alice"] == "Alice-Pass-91c2"


def test_a_value_sealed_for_one_row_does_not_open_for_another(store_url, key_file, capfd):
    ring = KeyRing.generate()
    sealed = seal("s", nas_secret_place("a"), ring)
    assert open_sealed(sealed, nas_secret_place("a"), ring) == "s"
    with pytest.raises(CannotOpen):
        open_sealed(sealed, nas_secret_place("b"), ring)
    with pytest.raises(CannotOpen):
        open_sealed(sealed, nas_secret_place("a"), KeyRing({ring.current: os.urandom(32)}, ring.current))

    seeded_store(store_url)
    engine, sessions = open_store(store_url, create=False)
    try:
        with sessions.begin() as s:  # an attacker with write access copies one NAS's secret onto another
            s.execute(text("UPDATE nas SET secret = (SELECT secret FROM nas WHERE name = 'localhost') "
                           "WHERE name = 'kamailio-lab'"))
            s.execute(text("UPDATE accounts SET password = 'clear-text' WHERE name = 'acme-sip'"))
        capfd.readouterr()
        snapshot = load_snapshot_from(sessions)
        # the log line goes to stdout or, once a command configured logging, to stderr (fd 2)
        log = "".join(capfd.readouterr())
        names = {n.name for n in snapshot.nas.values()}
        assert "localhost" in names and "kamailio-lab" not in names
        assert {a.name: a.password for a in snapshot.accounts.values()}["acme-sip"] is None
        assert "secrets.refused" in log and "nas 'kamailio-lab'" in log and "account 'acme-sip'" in log
        assert "clear-text" not in log
        # seal-existing seals the clear one; the copied one stays refused until set again
        assert main(["--database-url", store_url, "secrets", "seal-existing"]) == 0
        snapshot = load_snapshot_from(sessions)
        assert {a.name: a.password for a in snapshot.accounts.values()}["acme-sip"] == "clear-text"
        assert main(["--database-url", store_url, "nas", "update", "kamailio-lab", "--secret", "fresh"]) == 0
        assert "kamailio-lab" in {n.name for n in load_snapshot_from(sessions).nas.values()}
    finally:
        engine.dispose()


def _auth(server, attrs, raw=None, password=None, source=None):
    pkt = AuthPacket(code=AccessRequest, id=int(time.monotonic_ns()) % 256, secret=SECRET, dict=DICTIONARY)
    pkt.authenticator = pkt.CreateAuthenticator()
    if password is not None:
        pkt.AddAttribute("User-Password", pkt.PwCrypt(password))
    for name, value in attrs:
        pkt.AddAttribute(name, value)
    for code, values in (raw or {}).items():
        pkt[code] = values
    pkt.add_message_authenticator()
    data = pkt.RequestPacket()
    answer = exchange(data, server.auth_port, source=source)
    assert answer is not None, "no answer"
    reply = pkt.CreateReply(packet=answer)
    assert pkt.VerifyReply(reply, answer, enforce_ma=True)  # signed with the NAS secret
    return reply.code


def _every_way_in(server, n):
    """PAP, CHAP and SIP Digest for acme-sip, and an accounting request: all need the opened values."""
    called = [("User-Name", "acme-sip"), ("Called-Station-Id", "442071234567"),
              ("h323-conf-id", f"h323-conf-id=5EC7E700 00000000 00000000 {n:08X}")]
    assert _auth(server, called, password="s3cret-pass") == AccessAccept
    assert _auth(server, called, password="wrong") != AccessAccept
    chap_id, challenge = b"\x07", os.urandom(16)
    chap = chap_id + hashlib.md5(chap_id + b"s3cret-pass" + challenge).digest()
    assert _auth(server, called, raw={3: [chap], 60: [challenge]}) == AccessAccept
    uri = "sip:442071234567@sip.example.com"
    ha1 = hashlib.md5(b"acme-sip:sip.example.com:s3cret-pass").hexdigest()
    ha2 = hashlib.md5(f"INVITE:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:n0nce:00000001:c0ffee:auth:{ha2}".encode()).hexdigest()

    def sub(t, value):
        return bytes([t, len(value) + 2]) + value.encode()
    digest = {206: [response.encode()],
              207: [sub(10, "acme-sip"), sub(1, "sip.example.com"), sub(2, "n0nce"), sub(4, uri), sub(3, "INVITE"),
                    sub(5, "auth"), sub(9, "00000001"), sub(8, "c0ffee")]}
    assert _auth(server, [("User-Name", "acme-sip"), ("Service-Type", 15), ("Called-Station-Id", uri),
                          ("Sip-Uri-User", "442071234567"), ("Cisco-AVPair", f"call-id=sec-{n}@10.0.0.1")],
                 raw=digest, source="127.0.0.2") == AccessAccept
    data, _ = acct_request([("Acct-Status-Type", 7), ("Acct-Session-Id", f"on-{n}")])  # Accounting-On
    answer = exchange(data, server.acct_port, timeout=5)
    assert answer is not None and answer[0] == AccountingResponse


def test_rotation_reseals_everything_and_the_server_keeps_working(store_url, key_file, tmp_path):
    seeded_store(store_url)
    before = _dump(store_url)
    old = read_key_file(key_file)
    server = ServerProcess(store_url, tmp_path).wait_ready()
    try:
        _every_way_in(server, 1)
        version = server.events("server.ready")[-1]["snapshot_version"]
        assert main(["--database-url", store_url, "secrets", "rotate"]) == 0
        new = read_key_file(key_file)
        assert list(new.keys) == [new.current] and new.current not in old.keys  # old key gone from the file
        after = _dump(store_url)
        assert f"rs1:{old.current}:" in before and f"rs1:{old.current}:" not in after
        assert after.count(f"rs1:{new.current}:") == before.count(f"rs1:{old.current}:") > 0
        deadline = time.monotonic() + 10
        while not any(e["version"] > version for e in server.events("snapshot.loaded")):
            assert time.monotonic() < deadline, "the server did not reload after the rotation"
            time.sleep(0.05)
        _every_way_in(server, 2)
        assert not server.events("secrets.refused")
    finally:
        assert server.stop() == 0
    audit = _dump(store_url)
    assert "'rotate'" in audit and new.current in audit


@pytest.mark.parametrize("problem", ["missing", "wrong"])
def test_missing_or_wrong_key_file_is_one_clear_line_at_start(sqlite_url, key_file, tmp_path, problem):
    seeded_store(sqlite_url)
    if problem == "missing":
        key_file.unlink()
    else:
        write_key_file(key_file, KeyRing.generate())
    done = subprocess.run([sys.executable, "-m", "radiusd", "serve", "--bind", "127.0.0.1", "--auth-port", "0",
                           "--acct-port", "0", "--metrics-port", "0", "--workers", "1"],
                          env=dict(os.environ, DATABASE_URL=sqlite_url), capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    # the one line for the operator (the JSON log carries the same as server.startup_failed)
    lines = [line for line in done.stderr.splitlines() if line.startswith("radiusd: error:")]
    assert len(lines) == 1 and str(key_file) in lines[0], done.stderr
    assert ("does not exist" if problem == "missing" else "does not hold key") in lines[0]
