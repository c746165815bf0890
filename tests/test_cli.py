"""The CLI shell: output piped into a pager or `head` ends quietly, never with a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_output_cut_short_by_head_is_not_an_error(sqlite_url):
    seed = subprocess.run([sys.executable, "-m", "radiusd", "seed", "load", str(ROOT / "schema/seeds/demo.sql"),
                           "--database-url", sqlite_url], capture_output=True, text=True, timeout=60)
    assert seed.returncode == 0, seed.stderr
    run = subprocess.run(["bash", "-o", "pipefail", "-c",
                          f"{sys.executable} -m radiusd account list --database-url {sqlite_url} | head -n 1"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert run.stdout.startswith("ID")
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr
