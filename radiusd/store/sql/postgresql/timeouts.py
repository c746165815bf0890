"""Time limits (milliseconds) of the store's own transactions: a store slower than a switch's
retransmit timeout must fail fast so that accounting goes to the spool and Access-Requests get
code 8, instead of queueing behind a held lock. Connections the server keeps take the session
form once; the sweeper's pooled transactions take the LOCAL form.

The kept connections also plan without sequential scans: their statements are prepared once and
run for hours, with a generic plan fixed from the statistics of that moment. On a new store
(`active_calls` empty, never analyzed) that plan scanned the whole table per admission batch
(measured: most of the store's CPU). Every statement there has an index made for it; with
sequential scans priced out, the plan is that index whatever the statistics say.
"""
from __future__ import annotations

STATEMENTS = {
    "session": "SET statement_timeout = %(ms)s; SET lock_timeout = %(ms)s; SET enable_seqscan = off",
    "local": "SET LOCAL statement_timeout = %(ms)s; SET LOCAL lock_timeout = %(ms)s",
    # the spool's replay probes a store that was stuck: a short lock wait, so that records
    # arriving meanwhile are not held up behind the probe
    "local_lock": "SET LOCAL lock_timeout = %(ms)s",
}
