"""The README and the CLI cannot drift apart: every `radiusd …` command in the README's code blocks
parses with the real parser (options spelled out, not abbreviated), the CLI synopsis lists exactly
the commands the parser has, the examples run in order on a demo store (SQLite and PostgreSQL), and
the CDR fields the README names are the keys `cdr list --json` gives."""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from radius_server import free_port

from radiusd.cli import build_parser, main
from radiusd.db import open_store
from radiusd.models import Cdr

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEMO = str(ROOT / "schema" / "seeds" / "demo.sql")
READ_ONLY = {"list", "show", "search", "schema"}
SEPARATORS = {"&&", "||", "|", ";", "&"}
EXAMPLES_INTRO = "Examples, on the demo's store"


def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, offset in the text, lines) of every fenced block."""
    # a line ending in a backslash continues on the next, as the shell reads it
    return [(m.group(1), m.start(), re.sub(r"\\\n\s*", " ", m.group(2)).splitlines())
            for m in re.finditer(r"(?ms)^```(\w*)\n(.*?)^```", text)]


def commands_in(line: str) -> list[tuple[list[str], str | None, str]]:
    """The radiusd commands of one shell line: (argv, stdin, trailing comment)."""
    comment = line.split(" # ", 1)[1].strip() if " # " in line else ""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    found, segment = [], []
    for token in tokens + [";"]:
        if token not in SEPARATORS:
            segment.append(token)
            continue
        words = list(segment)
        segment = []
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words.pop(0)  # VAR=value before the command
        if not words or Path(words[0]).name != "radiusd":
            continue
        argv, stdin, rest = [], None, iter(words[1:])
        for word in rest:
            if word == "<<<":
                stdin = next(rest) + "\n"
            elif word in ("<", ">", ">>"):
                next(rest)
            else:
                argv.append(word)
        found.append((argv, stdin, comment))
    return found


def readme_commands(kind: str = "sh") -> list[tuple[list[str], str | None, str, int]]:
    return [(argv, stdin, comment, offset)
            for lang, offset, lines in code_blocks(README) if lang == kind
            for line in lines if not line.lstrip().startswith("#")
            for argv, stdin, comment in commands_in(line)]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def resolve(argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)command argv names."""
    parser = build_parser()
    for word in argv:
        choices = subcommands(parser)
        if word not in choices:
            break
        parser = choices[word]
    return parser


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


def test_readme_commands_are_found():
    commands = [argv for argv, *_ in readme_commands()]
    assert ["demo"] in commands                                     # the first of the two commands
    assert len(commands) >= 20, commands
    assert commands_in("DATABASE_URL=x .venv/bin/radiusd seed load f.sql && radiusd a --b 'c d' # why") == [
        (["seed", "load", "f.sql"], None, "why"), (["a", "--b", "c d"], None, "why")]


@pytest.mark.parametrize("argv", [argv for argv, *_ in readme_commands()], ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_parses(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"radiusd {' '.join(argv)}: does not parse ({exc.code}): {err.getvalue().strip()}")
    known = options_of(resolve(argv))
    for word in argv:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in known, f"radiusd {' '.join(argv)}: {word} is an abbreviation or unknown"


def _synopsis() -> list[tuple[list[str], list[str], list[str]]]:
    """(commands, actions, options) of each line of the CLI synopsis block."""
    [block] = [lines for lang, _, lines in code_blocks(README) if lang == "" and any(
        line.startswith("radiusd db ") for line in lines)]
    parsed = []
    for line in block:
        usage = re.split(r"\s{2,}", line.strip())[0].split()
        assert usage[0] == "radiusd", line
        actions = usage[2].split("|") if len(usage) > 2 and not usage[2].startswith("[") and \
            not usage[2].isupper() else []
        options = re.findall(r"\[(--[a-z-]+)", line)
        parsed.append((usage[1].split("|"), actions, options))
    return parsed


def test_cli_synopsis_lists_exactly_what_the_parser_has():
    documented, parser = set(), build_parser()
    for commands, actions, options in _synopsis():
        for command in commands:
            assert command in subcommands(parser), f"README lists `radiusd {command}`, the CLI has none"
            for action in actions or [None]:
                target = subcommands(parser)[command]
                if action is not None and not subcommands(target):  # a mode argument (`bench auth`)
                    assert action in _modes(target), f"README lists `radiusd {command} {action}`, the CLI has none"
                    documented.add((command, None))
                    continue
                if action is not None:
                    assert action in subcommands(target), f"README lists `radiusd {command} {action}`, the CLI has none"
                    target = subcommands(target)[action]
                documented.add((command, action))
                for option in options:
                    assert option in options_of(target), f"README: `radiusd {command} {action} {option}` is not an option"
    actual = {(command, action) for command, sub in subcommands(parser).items()
              for action in (subcommands(sub) or {None: None})}
    # a command that also runs without an action (`radiusd web` serves; `web user …` manages)
    actual |= {(command, None) for command, sub in subcommands(parser).items()
               if subcommands(sub) and sub.get_default("func") is not None
               and not sub.get_default("func").__qualname__.startswith("_group")}
    assert actual == documented, f"in the CLI, not the README: {sorted(actual - documented, key=str)}"
    bench = subcommands(parser)["bench"]
    assert _modes(bench) == {a for c, actions, _ in _synopsis() if c == ["bench"] for a in actions}


def _modes(parser: argparse.ArgumentParser) -> set[str]:
    return {choice for action in parser._actions if not action.option_strings and action.choices
            for choice in action.choices}


def _examples() -> list[tuple[list[str], str | None, str]]:
    intro = README.index(EXAMPLES_INTRO)
    first = min(offset for *_, offset in readme_commands() if offset > intro)
    return [(argv, stdin, comment) for argv, stdin, comment, offset in readme_commands() if offset == first]


def _run(url, argv, stdin, monkeypatch, capsys):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main([*argv, "--database-url", url])
    out, err = capsys.readouterr()
    return code, out, err


def test_readme_examples_run_in_order_on_a_demo_store(store_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USER", "readme")
    (tmp_path / "rates.csv").write_text("prefix,description,price_per_minute,connection_fee,minimum_seconds,"
                                        "interval_seconds,grace_seconds,effective_from,effective_until\n"
                                        "44,United Kingdom,0.02,0,1,1,0,,\n49,Germany,0.03,0.05,60,60,0,,\n")
    for argv in (["db", "init"], ["seed", "load", DEMO]):
        assert _run(store_url, argv, None, monkeypatch, capsys)[0] == 0
    examples = _examples()
    assert len(examples) >= 10
    for argv, stdin, comment in examples:
        code, out, err = _run(store_url, argv, stdin, monkeypatch, capsys)
        shown = f"radiusd {' '.join(argv)}: {err.strip()}"
        if "refused (exit 2)" in comment:
            assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, shown
            assert comment.split(":", 1)[1].strip() in err, shown
        else:
            assert code == 0, shown
            assert "Traceback" not in err and "error" not in err, shown
    # and every read-only command shown anywhere runs on that store
    for argv, stdin, _comment, _offset in readme_commands():
        if len(argv) > 1 and argv[1] in READ_ONLY:
            code, _out, err = _run(store_url, argv, stdin, monkeypatch, capsys)
            assert code == 0, f"radiusd {' '.join(argv)}: {err.strip()}"


def test_readme_cdr_fields_are_the_json_keys(store_url, monkeypatch, capsys):
    paragraph = README[README.index("**CDR fields**"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    named = set(re.findall(r"`([a-z_]+)`", paragraph))
    assert _run(store_url, ["db", "init"], None, monkeypatch, capsys)[0] == 0
    engine, sessions = open_store(store_url)
    with sessions.begin() as s:
        s.add(Cdr(leg_key="k", call_id="c", leg="orig", disconnect_time=dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc),
                  result="success", cost=Decimal("0.1")))
    engine.dispose()
    code, out, _ = _run(store_url, ["cdr", "list", "--json"], None, monkeypatch, capsys)
    keys = set(json.loads(out)["rows"][0])
    assert keys - {"id"} <= named, f"in the JSON, not the README: {sorted(keys - named)}"
    field_like = {word for word in named if "_" in word and word != "cdr_unrated"} | (named & {"nas", "account", "client"})
    assert field_like <= keys, f"named in the README, not in the JSON: {sorted(field_like - keys)}"


def test_demo_says_how_other_commands_reach_its_store(tmp_path):
    """`radiusd demo` (the README's first command) prints the DATABASE_URL that the rest take."""
    auth, acct = free_port(2)
    proc = subprocess.Popen([sys.executable, "-m", "radiusd", "demo", "--auth-port", str(auth), "--acct-port",
                             str(acct), "--metrics-port", "0"], cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, RADIUSD_CONFIG="", PYTHONPATH=str(ROOT)))
    try:
        printed, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in printed):
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line)
        hint = [line for line in printed if "DATABASE_URL=" in line]
        assert hint, "".join(printed)
        url = re.search(r"DATABASE_URL=(\S+)", hint[0]).group(1)
        assert url == f"sqlite:///{tmp_path / 'radiusd-demo.sqlite3'}"
        listed = subprocess.run([sys.executable, "-m", "radiusd", "account", "list", "--json"], cwd=str(tmp_path),
                                capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, DATABASE_URL=url, PYTHONPATH=str(ROOT)))
        assert listed.returncode == 0, listed.stderr
        assert "acme-gw" in {a["name"] for a in json.loads(listed.stdout)}
        # without it, the default ./radiusd.sqlite3 does not exist: said, not created
        default = subprocess.run([sys.executable, "-m", "radiusd", "account", "list"], cwd=str(tmp_path),
                                 capture_output=True, text=True, timeout=60,
                                 env={k: v for k, v in dict(os.environ, PYTHONPATH=str(ROOT)).items()
                                      if k != "DATABASE_URL"})
        assert default.returncode == 2 and "radiusd db init" in default.stderr
        assert not (tmp_path / "radiusd.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_first_command_makes_a_venv_that_runs_radiusd(tmp_path):
    """README command 1 as written: a virtual environment, radiusd installed into it, its `radiusd`
    script. The venv sees this Python's packages (so the dependencies need no download) and gets
    radiusd itself; the venv's `radiusd` must run."""
    [line] = [line for lang, _, lines in code_blocks(README) if lang == "sh" for line in lines
              if line.startswith("python3 -m venv")]
    assert line == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/radiusd demo"
    venv = tmp_path / "venv"
    # without a pip of its own: this Python's pip installs into it (the build backend comes from PyPI)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                          "--disable-pip-version-check", "-e", str(ROOT)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert pip.returncode == 0, pip.stderr[-2000:]
    demo_help = subprocess.run([str(venv / "bin" / "radiusd"), "demo", "--help"], capture_output=True, text=True,
                               timeout=60, cwd=tmp_path)
    assert demo_help.returncode == 0 and "demo" in demo_help.stdout, demo_help.stderr
