#!/bin/sh
# One command on a fresh Debian 12 machine: radiusd vs FreeRADIUS 3.2 + rlm_sql/PostgreSQL.
# Options are passed to benchmarks/run.py (--quick, --duration S, --workers N, ...).
set -e
cd "$(dirname "$0")/.."
if ! python3 -c "import radiusd, pyrad, sqlalchemy, psycopg2" 2>/dev/null; then
    python3 -m pip install -e .
fi
exec python3 benchmarks/run.py "$@"
