"""A real switch end to end: SIPp -> Kamailio 5.6 (Debian, radcli) -> SIPp, with radiusd deciding.

Kamailio runs our own tests/kamailio/kamailio.cfg: calls from a number are authorized with
misc_radius (radius_load_caller_avps), calls from a SIP login with Digest through auth_radius, and
acc_radius reports Start and Stop. The NAS is added with `radiusd nas add` and left at its
defaults (Message-Authenticator policy auto; radcli sends none). Accepted calls complete through
Kamailio to the SIPp UAS; rejected ones get 403. Afterwards the CDRs, their costs and the balances
in the store are what the calls placed cost, computed here from the rate.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import _unavailable
from radius_server import ServerProcess, free_port
from radiusd.cli import main
from radiusd.db import open_store
from radiusd.models import Account, ActiveCall, Cdr, Client

HERE = Path(__file__).resolve().parent / "kamailio"
# Debian installs the modules under the multiarch directory
MODULES = next(iter(sorted(Path("/usr/lib").glob("*/kamailio/modules"))), Path("/usr/lib/kamailio/modules"))
NEEDED_MODULES = ("auth_radius.so", "misc_radius.so", "acc_radius.so", "tm.so", "rr.so", "auth.so")
SECRET = "kamailio-e2e-Secret"
CALLED = "442071234567"
PRICE, FEE, STEP = Decimal("0.30"), Decimal("0.05"), 60     # per minute, per call, minimum = interval
HOLD_MS = 2500                                               # how long each answered call lasts
OPENING = Decimal("10.00")


def _require_tools() -> tuple[str, str]:
    kamailio, sipp = shutil.which("kamailio"), shutil.which("sipp")
    if not kamailio:
        _unavailable("kamailio (Debian packages kamailio, kamailio-radius-modules)")
    missing = [m for m in NEEDED_MODULES if not (MODULES / m).exists()]
    if missing:
        _unavailable(f"Kamailio modules {', '.join(missing)} (Debian package kamailio-radius-modules)")
    if not sipp:
        _unavailable("sipp (Debian package sip-tester)")
    return kamailio, sipp


def _cli(url: str, *argv: str) -> dict:
    """Run one admin command as an operator would (in-process), return its JSON answer."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--database-url", url, "--actor", "e2e", "--json"])
    assert code == 0, f"radiusd {' '.join(argv)}: {err.getvalue()}"
    return json.loads(out.getvalue())


def _provision(url: str) -> None:
    assert _cli(url, "db", "init")
    # the switch, with every option left at its default but the dialect
    nas = _cli(url, "nas", "add", "kamailio", "--address", "127.0.0.1", "--secret", SECRET, "--dialect", "kamailio")
    assert nas["message_authenticator"] == "auto"
    _cli(url, "ratetable", "add", "retail")
    _cli(url, "rates", "add", "retail", "--prefix", "4420", "--price", str(PRICE), "--connection-fee", str(FEE),
         "--minimum", str(STEP), "--interval", str(STEP), "--effective-from", "2020-01-01")
    _cli(url, "client", "add", "Acme", "--balance", str(OPENING), "--orig-rate-table", "retail")
    _cli(url, "client", "add", "Broke", "--balance", "0", "--orig-rate-table", "retail")
    _cli(url, "account", "add", "acme-ani", "--client", "Acme", "--ident-by", "ani", "--ani", "15551230001",
         "--max-call-duration", "600")
    _cli(url, "account", "add", "alice", "--client", "Acme", "--ident-by", "name", "--password", "alice-Pass-1")
    _cli(url, "account", "add", "broke-ani", "--client", "Broke", "--ident-by", "ani", "--ani", "15559990000")


def _radcli_files(tmp: Path, auth_port: int, acct_port: int) -> Path:
    """radcli's own configuration: which server, its secret, the dictionary Kamailio's modules use."""
    (tmp / "servers").write_text(f"127.0.0.1\t{SECRET}\n")
    (tmp / "dictionary").write_text(
        "$INCLUDE /etc/radcli/dictionary\n"
        "$INCLUDE /etc/radcli/dictionary.sip\n"
        "ATTRIBUTE\tSIP-AVP\t225\tstring\n"
        "ATTRIBUTE\tSip-Group\t211\tstring\n"
        "VALUE\tService-Type\tCall-Check\t10\n"
        "VALUE\tService-Type\tSip-Session\t15\n"
        "VALUE\tAcct-Status-Type\tFailed\t15\n"
        "VALUE\tService-Type\tGroup-Check\t12\n"
        "VALUE\tService-Type\tSIP-Caller-AVPs\t30\n"
        "VALUE\tService-Type\tSIP-Callee-AVPs\t31\n"
    )
    conf = tmp / "radiusclient.conf"
    conf.write_text(
        f"authserver\t127.0.0.1:{auth_port}\n"
        f"acctserver\t127.0.0.1:{acct_port}\n"
        f"servers\t{tmp / 'servers'}\n"
        f"dictionary\t{tmp / 'dictionary'}\n"
        "radius_timeout\t3\n"
        "radius_retries\t1\n"
        "bindaddr\t*\n"
    )
    return conf


class Kamailio:
    def __init__(self, binary: str, tmp: Path, sip_port: int, uas_port: int, radcli_conf: Path):
        cfg = (HERE / "kamailio.cfg").read_text()
        for key, value in (("@SIP_PORT@", sip_port), ("@UAS_PORT@", uas_port), ("@RADCLI_CONF@", radcli_conf),
                           ("@MODULES@", f"{MODULES}/")):
            cfg = cfg.replace(key, str(value))
        (tmp / "kamailio.cfg").write_text(cfg)
        self.port = sip_port
        self.lines: list[str] = []
        # -DD: stay in the foreground (children forked), -E: log to stderr
        self.proc = subprocess.Popen([binary, "-DD", "-E", "-f", str(tmp / "kamailio.cfg"), "-Y", str(tmp),
                                      "-m", "64", "-M", "8"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     errors="replace", cwd=str(tmp), start_new_session=True)
        self._pump = threading.Thread(target=lambda: [self.lines.append(line.rstrip()) for line in self.proc.stderr],
                                      daemon=True)
        self._pump.start()

    def wait_ready(self, timeout: float = 20) -> "Kamailio":
        """Ready when it answers an OPTIONS (405 from our config)."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.3)
            port = sock.getsockname()[1]
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, "kamailio exited:\n" + "\n".join(self.lines[-40:])
                sock.sendto((f"OPTIONS sip:ping@127.0.0.1:{self.port} SIP/2.0\r\n"
                             f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-ready{time.monotonic_ns()}\r\n"
                             f"From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:ping@127.0.0.1>\r\n"
                             f"Call-ID: ready-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 5\r\n"
                             f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", self.port))
                try:
                    if sock.recv(4096).startswith(b"SIP/2.0 405"):
                        return self
                except socket.timeout:
                    continue
        raise AssertionError("kamailio not answering:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # the main process stops its children
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                import os
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._pump.join(5)


def _sipp(binary: str, tmp: Path, kamailio_port: int, scenario: str, caller: str, *extra: str) -> subprocess.CompletedProcess:
    """One call with SIPp as the caller's phone; exit code 0 = the scenario went as written."""
    port = free_port()[0]
    return subprocess.run(
        [binary, f"127.0.0.1:{kamailio_port}", "-sf", str(HERE / scenario), "-i", "127.0.0.1", "-p", str(port),
         "-m", "1", "-s", CALLED, "-key", "caller", caller, "-d", str(HOLD_MS), "-nostdin",
         "-recv_timeout", "15000", "-timeout", "30", "-timeout_error", "-trace_err",
         "-error_file", str(tmp / f"sipp-{scenario}-{caller}.err"), "-trace_msg", "-message_file", str(tmp / f"sipp-{scenario}-{caller}.msg"), *extra],
        capture_output=True, text=True, timeout=60, cwd=str(tmp))


def _expected_cost(duration: int) -> Decimal:
    """The rate's rule, written out independently: minimum, then whole intervals; fee per call."""
    billed = STEP if duration <= STEP else STEP + -(-(duration - STEP) // STEP) * STEP
    return (FEE + PRICE * billed / 60).quantize(Decimal("0.000001"), ROUND_HALF_UP)


def test_kamailio_calls_are_authorized_digest_checked_accounted_and_billed(store_url, tmp_path):
    kamailio_bin, sipp_bin = _require_tools()
    _provision(store_url)   # runs on both stores: SQLite (the embedded default) and PostgreSQL
    radiusd = ServerProcess(store_url, tmp_path, name="radiusd").wait_ready()
    sip_port, uas_port = free_port(2)
    kamailio = uas = None
    try:
        radcli = _radcli_files(tmp_path, radiusd.auth_port, radiusd.acct_port)
        uas = subprocess.Popen([sipp_bin, "-sf", str(HERE / "uas.xml"), "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin",
                                "-trace_err", "-error_file", str(tmp_path / "uas.err")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(tmp_path))
        kamailio = Kamailio(kamailio_bin, tmp_path, sip_port, uas_port, radcli).wait_ready()

        def call(scenario, caller, *extra):
            result = _sipp(sipp_bin, tmp_path, sip_port, scenario, caller, *extra)
            assert result.returncode == 0, (
                f"{scenario} from {caller}: sipp exit {result.returncode}\n{result.stdout[-2000:]}\n"
                + "\n".join(kamailio.lines[-30:]) + "\nradiusd:\n" + "\n".join(radiusd.lines[-10:]))

        # answered: two calls by caller number (misc_radius), one by SIP login (Digest via auth_radius)
        call("call.xml", "15551230001")
        call("digest_call.xml", "alice", "-au", "alice", "-ap", "alice-Pass-1")
        call("call.xml", "15551230001")
        # refused with 403: no money, unknown caller, wrong password
        call("call_forbidden.xml", "15559990000")
        call("call_forbidden.xml", "15550000000")
        call("digest_forbidden.xml", "alice", "-au", "alice", "-ap", "not-her-password")

        # Kamailio's log is read by a thread: wait until the six calls' lines are in
        def decided():
            return [line for line in kamailio.lines if "radius: " in line and (" accepted" in line or " refused" in line)]

        deadline = time.monotonic() + 10
        while len(decided()) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the Accept's duration reached Kamailio: account acme-ani is limited to 600 s
        accepted = [line for line in kamailio.lines if "radius: " in line and " accepted" in line]
        assert len(accepted) == 3, "\n".join(kamailio.lines[-40:])
        assert sum("15551230001 to 442071234567 accepted, session_max_time=600" in line for line in accepted) == 2
        refused = [line for line in kamailio.lines if "radius: " in line and " refused" in line]
        assert len(refused) == 3

        # every Stop is in: wait for the accounting of the three calls (no open call left)
        engine, sessions = open_store(store_url)
        try:
            deadline = time.monotonic() + 15
            while True:
                with sessions() as s:
                    cdrs = s.scalars(select(Cdr).order_by(Cdr.id)).all()
                    open_calls = s.scalars(select(ActiveCall)).all()
                if len(cdrs) >= 3 and not open_calls:
                    break
                assert time.monotonic() < deadline, f"{len(cdrs)} CDRs, {len(open_calls)} open calls"
                time.sleep(0.1)
            with sessions() as s:
                accounts = {a.id: a.name for a in s.scalars(select(Account))}
                balances = {c.name: c.balance for c in s.scalars(select(Client))}
        finally:
            engine.dispose()
    finally:
        if kamailio is not None:
            kamailio.stop()
            (tmp_path / "kamailio.log").write_text("\n".join(kamailio.lines) + "\n")
        if uas is not None:
            uas.terminate()
            uas.wait(10)
        radiusd_code = radiusd.stop()
        (tmp_path / "radiusd.log").write_text("\n".join(radiusd.lines) + "\n")

    assert [accounts[c.account_id] for c in cdrs] == ["acme-ani", "alice", "acme-ani"]
    for cdr in cdrs:
        assert cdr.called == CALLED and cdr.result == "success" and cdr.leg == "orig"
        assert HOLD_MS // 1000 <= cdr.duration <= HOLD_MS // 1000 + 5, cdr.duration
        assert cdr.billed_seconds == STEP and cdr.price_per_minute == PRICE
        assert cdr.cost == _expected_cost(cdr.duration)
    assert [c.caller for c in cdrs] == ["15551230001", "", "15551230001"]   # a login has no number
    charged = sum(_expected_cost(c.duration) for c in cdrs)
    assert charged == 3 * (FEE + PRICE)
    assert balances == {"Acme": OPENING - charged, "Broke": Decimal("0")}

    # the switch never sent Message-Authenticator; at the default policy it was served all along
    nas = _cli(store_url, "nas", "show", "kamailio")
    assert nas["message_authenticator"] == "auto" and nas["message_authenticator_learned"] is None
    assert not [e for e in radiusd.events("packet.dropped") if e.get("nas") == "kamailio"]
    assert radiusd_code == 0
