"""The CLI shell: output piped into a pager or `head` ends quietly, never with a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_output_cut_short_by_head_is_not_an_error(sqlite_url, tmp_path):
    # More output than a pipe holds (64 KiB), so radiusd is still writing when head exits.
    rows = ",\n".join(f"({i}, 'client number {i:05d} with a fairly long name', 0.00, 0.00)" for i in range(1, 2501))
    seed_file = tmp_path / "many.sql"
    seed_file.write_text(f"INSERT INTO clients (id, name, balance, credit_limit) VALUES\n{rows};\n")
    init = subprocess.run([sys.executable, "-m", "radiusd", "db", "init", "--database-url", sqlite_url],
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    seed = subprocess.run([sys.executable, "-m", "radiusd", "seed", "load", str(seed_file),
                           "--database-url", sqlite_url], capture_output=True, text=True, timeout=60)
    assert seed.returncode == 0, seed.stderr
    run = subprocess.run(["bash", "-o", "pipefail", "-c",
                          f"{sys.executable} -m radiusd client list --database-url {sqlite_url} | head -n 1"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert run.stdout.startswith("ID")
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr
