"""Run `python -m radiusd web` in a subprocess on a free port, and drive Debian's chromium.

The browser is the system's chromium (apt), launched by Playwright from PyPI: nothing downloads a
browser build. Without chromium or Playwright the browser tests skip, and under CI=true they fail.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from radius_server import free_port, stop_process

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebProcess:
    """`radiusd web` on 127.0.0.1:<free port> against the store `url`."""

    def __init__(self, url: str, tmp: Path, name: str = "web", extra_config: str = ""):
        self.port = free_port()[0]
        self.base = f"http://127.0.0.1:{self.port}"
        self.key_file = tmp / f"{name}.key"
        config = tmp / f"{name}.toml"
        config.write_text(f'[web]\nsecret_key_file = "{self.key_file}"\n{extra_config}')
        env = dict(os.environ, DATABASE_URL=url, RADIUSD_CONFIG=str(config))
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "radiusd", "web", "--bind", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(tmp))
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 30) -> "WebProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"radiusd web exited {self.proc.returncode}:\n" + "\n".join(self.lines[-30:]))
            try:
                with urllib.request.urlopen(self.base + "/login", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AssertionError("radiusd web not ready:\n" + "\n".join(self.lines[-30:]))

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def stop(self, timeout: float = 20) -> int:
        return stop_process(self.proc, self._pump, signal.SIGINT, timeout)


def wait_for(condition, timeout: float = 15.0, interval: float = 0.1, what: str = "condition"):
    """condition()'s first truthy value, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
